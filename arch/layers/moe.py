"""Sparse Mixture-of-Experts feed-forward layers: a learned router sends each token to k of E
expert MLPs (Shazeer et al. 2017, "Outrageously large neural networks"; GShard, Lepikhin et
al. 2021; Switch Transformer, Fedus et al. 2022; Mixtral, Jiang et al. 2024; DeepSeekMoE,
Dai et al. 2024), with expert parallelism over the mesh's `expert` axis.

Routing (token choice, top-k). The router is a bias-free linear map D -> E, run in float32;
p(x) = softmax(router logits). Each token picks the k experts of largest p; its gates are
those probabilities (`normalize_gates=False`: Switch, top-1, and DeepSeekMoE) or the same
renormalised to sum to 1 over the k (`normalize_gates=True`: Mixtral's softmax over the
top-2 logits). The layer's output is sum_k gate_k * Expert_{e_k}(x).

Capacity and dropping (GShard, Switch). Tokens compete for expert slots within a group, here
one sequence (B groups of T tokens, so routing never depends on the batch's layout over
devices). Each expert takes at most C = ceil(k * T * capacity_factor / E) tokens (at least
`min_capacity`, at most T); first choices are served before second choices, and within a
choice earlier tokens first. An assignment past its expert's capacity is dropped: its term
is missing from the sum, and a token that loses all k assignments leaves the layer as zero,
so the block's residual connection passes it through unchanged. capacity_factor <= 0 is
dropless (C = T: every assignment fits), as Mixtral and DeepSeekMoE run; evaluation and
decoding use `eval_capacity_factor` (default dropless), so the cached one-token decode
gives the full forward pass's logits.

Dispatch as dense tensors (GShard's einsum form): a 0/1 dispatch mask (B, T, E, C) gathers
each expert's tokens into (E, B, C, D); the experts run as batched matmuls with stacked
weights (E, D, F); a combine tensor holding the gates scatters the results back. Under jit
over a mesh with `expert` > 1 the stacked weights are split over that axis (logical axis
'expert') while the tokens are split over every batch axis, `expert` included; the
sharding constraint on the dispatched (E, B, C, D) tensor (experts over `expert`, groups
over the other batch axes) makes XLA move tokens to their experts' devices with an
all-to-all and back after the experts (tests/test_moe.py finds the all-to-all in the
compiled step and the same loss on 8 devices as on 1).

Shared experts (DeepSeekMoE): `num_shared_experts` experts that every token uses, with
weight 1, beside the routed ones; they are one MLP of width num_shared_experts x
expert_dim (the same function as that many experts summed), parameters `shared/...`.

Auxiliary losses, sown into the 'losses' collection already weighted (the objective adds
every leaf of it; `aux_losses`):
  load balance  E * sum_e f_e P_e, f_e the fraction of the group's k T assignments that
                chose expert e (before dropping) and P_e its mean router probability, per
                group and averaged over groups: Switch's eq. (4) at k = 1, DeepSeekMoE's
                expert-level balance loss (their f_i is E f_e) for any k; 1 when routing is
                uniform, E when one expert takes every token. Weight `balance_loss_weight`.
  router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): mean over tokens of
                logsumexp(router logits)^2, weight `z_loss_weight`.
Diagnostics go to the 'moe' collection (`moe_metrics` averages them over layers):
`balance_loss` and `z_loss` unweighted, `dropped` (fraction of assignments over capacity)
and `load` (E,), each expert's fraction f_e of the assignments.

Parameters: `router/kernel` (D, E); experts `wi`, `wi_up` (gated) (E, D, F), `wo` (E, F, D),
biases (E, F) and (E, D) with `use_bias`; `shared/...` an Mlp.

Dimension key: B groups (sequences), T tokens per group, D width, E experts, C capacity,
K experts per token, F expert hidden width.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers.embed import ACTIVATIONS, Mlp
from arch.layers.transformer import Block

Dtype = Any

LOSSES = 'losses'  # sown, weighted auxiliary loss terms
METRICS = 'moe'  # sown diagnostics
COLLECTIONS = (LOSSES, METRICS)


def capacity(tokens: int, num_experts: int, top_k: int, capacity_factor: float,
             min_capacity: int = 1) -> int:
  """Slots per expert per group: ceil(k T cf / E), clipped to [min_capacity, T]; T when
  capacity_factor <= 0 (dropless)."""
  if capacity_factor <= 0:
    return tokens
  c = math.ceil(top_k * tokens * capacity_factor / num_experts)
  return max(1, min(tokens, max(min_capacity, c)))


def route(probs_BTE, top_k: int, cap: int, normalize_gates: bool):
  """Top-k token-choice routing with per-expert capacity `cap` in each group (row).

  Returns (dispatch_BTEC 0/1, combine_BTEC gates, chosen_BKTE 0/1 of every choice before
  dropping, kept_BKT whether choice k of token t got a slot)."""
  e = probs_BTE.shape[-1]
  gate_BTK, expert_BTK = jax.lax.top_k(probs_BTE, top_k)
  if normalize_gates:
    gate_BTK = gate_BTK / gate_BTK.sum(-1, keepdims=True)
  chosen_BKTE = jax.nn.one_hot(expert_BTK.transpose(0, 2, 1), e, dtype=jnp.int32)
  b, k, t, _ = chosen_BKTE.shape
  # Slot of each assignment in its expert: choices in priority order (all first choices,
  # then all second choices, ...; tokens in order within one), counted per expert.
  order = chosen_BKTE.reshape(b, k * t, e)
  slot_BKT = ((jnp.cumsum(order, axis=1) - 1) * order).sum(-1).reshape(b, k, t)
  kept_BKT = slot_BKT < cap
  slot_BKTC = jax.nn.one_hot(jnp.where(kept_BKT, slot_BKT, cap), cap, dtype=probs_BTE.dtype)
  assign_BKTEC = chosen_BKTE[..., None].astype(probs_BTE.dtype) * slot_BKTC[:, :, :, None, :]
  dispatch_BTEC = assign_BKTEC.sum(1)
  combine_BTEC = jnp.einsum('bkt,bktec->btec', gate_BTK.transpose(0, 2, 1), assign_BKTEC)
  return dispatch_BTEC, combine_BTEC, chosen_BKTE, kept_BKT


def balance_loss(probs_BTE, chosen_BKTE):
  """E * sum_e f_e P_e per group, averaged over groups (see the module docstring)."""
  e = probs_BTE.shape[-1]
  f_BE = chosen_BKTE.astype(jnp.float32).mean(axis=(1, 2))
  p_BE = probs_BTE.mean(axis=1)
  return e * (f_BE * p_BE).sum(-1).mean()


def z_loss(logits_BTE):
  """ST-MoE's router z-loss: mean over tokens of logsumexp(logits)^2."""
  return jnp.mean(jax.nn.logsumexp(logits_BTE, axis=-1) ** 2)


class MoE(nn.Module):
  """Top-k routed experts (and optional shared ones): (B, T, D) -> (B, T, D)."""
  num_experts: int
  expert_dim: int
  top_k: int = 2
  capacity_factor: float = 1.25  # in training; <= 0: dropless
  eval_capacity_factor: float = 0.0  # evaluation and decoding; <= 0: dropless
  min_capacity: int = 1
  normalize_gates: bool = True  # Mixtral; False: the router's probabilities (Switch)
  num_shared_experts: int = 0  # DeepSeekMoE's always-used experts
  balance_loss_weight: float = 0.01
  z_loss_weight: float = 0.0
  router_jitter: float = 0.0  # Switch: router input times U(1 - eps, 1 + eps) in training
  activation: str = 'silu'
  gated: bool = True
  use_bias: bool = False
  dropout_rate: float = 0.0  # on the experts' hidden activations
  init_stddev: Optional[float] = None
  out_init_stddev: Optional[float] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _kernel(self, name, shape, axes, stddev):
    init = nn.initializers.normal(stddev) if stddev else nn.initializers.lecun_normal(
        batch_axis=(0,))
    return jnp.asarray(self.param(name, nn.with_logical_partitioning(init, axes), shape,
                                  self.param_dtype), self.dtype)

  def _bias(self, name, shape, axes):
    return jnp.asarray(self.param(name, nn.with_logical_partitioning(
        nn.initializers.zeros, axes), shape, self.param_dtype), self.dtype)

  @nn.compact
  def __call__(self, x_BTD, deterministic: bool = True):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; valid: {", ".join(ACTIVATIONS)}')
    if not 1 <= self.top_k <= self.num_experts:
      raise ValueError(f'top_k={self.top_k} must be in [1, num_experts={self.num_experts}]')
    act = ACTIVATIONS[self.activation]
    b, t, d = x_BTD.shape
    e, f = self.num_experts, self.expert_dim

    router_in = x_BTD.astype(jnp.float32)
    if self.router_jitter and not deterministic:
      router_in = router_in * jax.random.uniform(
          self.make_rng('dropout'), router_in.shape, minval=1.0 - self.router_jitter,
          maxval=1.0 + self.router_jitter)
    router_init = (nn.initializers.normal(self.init_stddev) if self.init_stddev
                   else nn.initializers.lecun_normal())
    logits_BTE = nn.Dense(e, use_bias=False, dtype=jnp.float32, param_dtype=self.param_dtype,
                          kernel_init=nn.with_logical_partitioning(router_init, ('embed', None)),
                          name='router')(router_in)
    probs_BTE = jax.nn.softmax(logits_BTE, axis=-1)
    cf = self.eval_capacity_factor if deterministic else self.capacity_factor
    cap = capacity(t, e, self.top_k, cf, self.min_capacity)
    dispatch_BTEC, combine_BTEC, chosen_BKTE, kept_BKT = route(
        probs_BTE, self.top_k, cap, self.normalize_gates)

    # Tokens to their experts: the groups leave the `expert` axis, the experts take it.
    x_EBCD = jnp.einsum('btec,btd->ebcd', dispatch_BTEC.astype(self.dtype), x_BTD)
    x_EBCD = nn.with_logical_constraint(x_EBCD, ('expert', 'expert_group', None, 'embed'))
    h_EBCF = jnp.einsum('ebcd,edf->ebcf', x_EBCD, self._kernel(
        'wi', (e, d, f), ('expert', 'embed', 'mlp'), self.init_stddev))
    if self.use_bias:
      h_EBCF = h_EBCF + self._bias('wi_bias', (e, f), ('expert', 'mlp'))[:, None, None]
    h_EBCF = act(h_EBCF)
    if self.gated:
      up_EBCF = jnp.einsum('ebcd,edf->ebcf', x_EBCD, self._kernel(
          'wi_up', (e, d, f), ('expert', 'embed', 'mlp'), self.init_stddev))
      if self.use_bias:
        up_EBCF = up_EBCF + self._bias('wi_up_bias', (e, f), ('expert', 'mlp'))[:, None, None]
      h_EBCF = h_EBCF * up_EBCF
    h_EBCF = nn.Dropout(self.dropout_rate)(h_EBCF, deterministic=deterministic)
    y_EBCD = jnp.einsum('ebcf,efd->ebcd', h_EBCF, self._kernel(
        'wo', (e, f, d), ('expert', 'mlp', 'embed'), self.out_init_stddev or self.init_stddev))
    if self.use_bias:
      y_EBCD = y_EBCD + self._bias('wo_bias', (e, d), ('expert', 'embed'))[:, None, None]
    y_EBCD = nn.with_logical_constraint(y_EBCD, ('expert', 'expert_group', None, 'embed'))
    # ... and back, each weighted by its gate.
    y_BTD = jnp.einsum('btec,ebcd->btd', combine_BTEC.astype(self.dtype), y_EBCD)
    y_BTD = nn.with_logical_constraint(y_BTD, ('batch', 'length', 'embed'))

    if self.num_shared_experts:
      y_BTD = y_BTD + Mlp(self.num_shared_experts * f, self.activation, gated=self.gated,
                          use_bias=self.use_bias, dropout_rate=self.dropout_rate,
                          init_stddev=self.init_stddev, out_init_stddev=self.out_init_stddev,
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          name='shared')(x_BTD, deterministic)

    balance = balance_loss(probs_BTE, chosen_BKTE)
    z = z_loss(logits_BTE)
    self.sow(LOSSES, 'moe', self.balance_loss_weight * balance + self.z_loss_weight * z)
    self.sow(METRICS, 'balance_loss', balance)
    self.sow(METRICS, 'z_loss', z)
    self.sow(METRICS, 'dropped', 1.0 - kept_BKT.astype(jnp.float32).mean())
    self.sow(METRICS, 'load', chosen_BKTE.astype(jnp.float32).mean(axis=(0, 1, 2)))
    return y_BTD


class MoEBlock(Block):
  """A Transformer block whose feed-forward branch is `MoE(**moe)`, with the block's
  activation, gating, biases, hidden dropout and initialisation."""
  moe: Any = None  # dict of MoE fields: num_experts, expert_dim, top_k, ...

  def make_mlp(self, name):
    return MoE(**dict(self.moe), activation=self.activation, gated=self.gated_mlp,
               use_bias=self.use_bias, dropout_rate=self.mlp_dropout_rate,
               init_stddev=self.init_stddev, out_init_stddev=self.out_init_stddev,
               dtype=self.dtype, param_dtype=self.param_dtype, name=name)


def is_sparse(layer: int, every: int) -> bool:
  """Whether layer `layer` (from 0) of a stack with an MoE layer every `every` layers is
  one: layers 1, 1 + every, 1 + 2 every, ... (Hugging Face's Switch Transformers rule:
  every other layer from the second at every = 2); all at every = 1; none at 0."""
  return every == 1 or (every > 1 and layer % every == 1)


def aux_losses(mutated) -> jax.Array:
  """The sum of every weighted auxiliary loss a forward pass sowed (0.0 if none)."""
  leaves = jax.tree.leaves(mutated.get(LOSSES, {}))
  return sum(leaves, jnp.zeros((), jnp.float32))


def moe_metrics(mutated) -> dict:
  """The MoE layers' diagnostics, averaged over layers: `moe_balance_loss`, `moe_z_loss`,
  `moe_dropped`, and the expert load (fraction of assignments per expert) as
  `expert_load_max` and `expert_load_min` (1/E each when balanced) and, for at most 16
  experts, `expert_load_{e}`. Empty without MoE layers."""
  found = {}

  def walk(tree):
    for key, value in tree.items():
      if isinstance(value, tuple):
        found.setdefault(key, []).extend(value)
      else:
        walk(value)
  walk(mutated.get(METRICS, {}))
  if not found:
    return {}
  out = {f'moe_{k}': jnp.mean(jnp.stack(found[k])) for k in ('balance_loss', 'z_loss', 'dropped')}
  load_E = jnp.mean(jnp.stack(found['load']), axis=0)
  out['expert_load_max'] = load_E.max()
  out['expert_load_min'] = load_E.min()
  if load_E.shape[0] <= 16:
    out.update({f'expert_load_{i}': load_E[i] for i in range(load_E.shape[0])})
  return out


def without_sown(variables) -> dict:
  """`variables` less the collections MoE layers sow into (what `init` returns holds them;
  they are outputs of a forward pass, not state to train or checkpoint)."""
  return {k: v for k, v in variables.items() if k not in COLLECTIONS}


def apply(model, variables, *args, **kwargs):
  """model.apply(variables, *args, **kwargs) -> (output, weighted auxiliary loss, MoE
  metrics): a task's forward pass that also collects what MoE layers sow (0.0 and {}
  for a model without them)."""
  out, mutated = model.apply(variables, *args, mutable=list(COLLECTIONS), **kwargs)
  return out, aux_losses(mutated), moe_metrics(mutated)
