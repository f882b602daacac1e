"""Mixture-of-Experts decoder language models: the LLaMA-style decoder (arch/sequence/llama.py)
with its SwiGLU MLP replaced by a sparse Mixture-of-Experts layer (arch/layers/moe.py) in
every layer, or every `moe_every`-th one.

Three routings from the literature are configurations of the one layer:
  Mixtral (Jiang et al. 2024, "Mixtral of experts"): 8 SwiGLU experts, top-2, the gates a
      softmax over the two chosen logits, dropless; the rest of the model is Mistral's
      (grouped-query attention, rotary positions with theta 1e6, RMSNorm, untied head).
  Switch (Fedus et al. 2022): top-1, the gate the router's probability, capacity factor
      1.25 with token dropping, load-balancing loss 0.01 (the Switch Transformer itself is
      an encoder-decoder: arch/sequence/t5.py with `moe`).
  DeepSeekMoE (Dai et al. 2024): fine-grained experts (many, each narrow; more chosen per
      token) plus shared experts every token uses, gates the router's probabilities.

Hugging Face's MixtralForCausalLM names: block_sparse_moe.gate is layers_{i}/mlp/router,
experts.{e}.w1 / w3 / w2 are mlp/wi[e] / wi_up[e] / wo[e] (stacked over experts); the rest
is LlamaForCausalLM's mapping (llama.py). Mixtral-8x7B has 46,702,792,704 parameters,
12,879,925,248 of them active for a token (2 of 8 experts; `active_params`).

The interface is gpt.Model's (causal-LM task, sampler, KV cache). The auxiliary losses the
MoE layers sow ('losses' collection) are added to the objective by the LM task, and their
diagnostics (expert load, dropped fraction) reported as train metrics.

Dimension key: B batch, T length, D width, V vocabulary.
"""

import math
from typing import Optional

import jax
import numpy as np

from arch.layers.moe import MoEBlock, is_sparse
from arch.sequence import llama


class Model(llama.Model):
  """LLaMA-style decoder with MoE feed-forward layers: tokens (B, T) -> logits (B, T, V)."""
  num_experts: int = 8
  expert_dim: Optional[int] = None  # default: mlp_dim (each expert a full SwiGLU MLP)
  top_k: int = 2
  capacity_factor: float = 0.0  # training; <= 0: dropless (Mixtral)
  eval_capacity_factor: float = 0.0
  normalize_gates: bool = True
  num_shared_experts: int = 0
  balance_loss_weight: float = 0.01
  z_loss_weight: float = 0.0
  router_jitter: float = 0.0
  moe_every: int = 1  # MoE in layers 1, 1 + moe_every, ... (all when 1), dense elsewhere

  def moe_fields(self) -> dict:
    return dict(num_experts=self.num_experts,
                expert_dim=self.expert_dim or self.mlp_dim or llama.swiglu_width(self.embed_dim),
                top_k=self.top_k, capacity_factor=self.capacity_factor,
                eval_capacity_factor=self.eval_capacity_factor,
                normalize_gates=self.normalize_gates,
                num_shared_experts=self.num_shared_experts,
                balance_loss_weight=self.balance_loss_weight,
                z_loss_weight=self.z_loss_weight, router_jitter=self.router_jitter)

  def layer(self, i: int, x_BTD, pos_BT, *, train: bool, decode: bool, context=None):
    if not is_sparse(i, self.moe_every):
      return super().layer(i, x_BTD, pos_BT, train=train, decode=decode, context=context)
    if context is not None:
      raise ValueError('this model takes no context')
    return MoEBlock(self.num_heads, self.mlp_dim or llama.swiglu_width(self.embed_dim),
                    moe=self.moe_fields(), num_kv_heads=self.num_kv_heads, pre_norm=True,
                    norm='rms', norm_eps=self.norm_eps, activation='silu', gated_mlp=True,
                    use_bias=False, rope=True, rope_max_wavelength=self.rope_max_wavelength,
                    rope_scale=self.rope_scale, dropout_rate=self.dropout_rate,
                    attention_dropout_rate=self.dropout_rate, init_stddev=self.init_stddev,
                    out_init_stddev=self.init_stddev / math.sqrt(2 * self.num_layers),
                    dtype=self.dtype, param_dtype=self.param_dtype, name=f'layers_{i}')(
                        x_BTD, causal=True, positions_BT=pos_BT, deterministic=not train,
                        decode=decode)


def active_params(params, num_experts: int, top_k: int) -> int:
  """Parameters one token uses: every parameter except the routed experts' (leaves with a
  leading axis of num_experts under an MoE layer's wi / wi_up / wo and their biases),
  of which top_k / num_experts. Works on arrays or ShapeDtypeStructs."""
  total = 0
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in flat:
    names = [getattr(p, 'key', getattr(p, 'name', '')) for p in path]
    size = int(np.prod(leaf.shape))
    routed = (names[-1] in ('wi', 'wi_up', 'wo', 'wi_bias', 'wi_up_bias', 'wo_bias')
              and 'shared' not in names and leaf.shape[0] == num_experts and len(names) >= 2
              and names[-2] == 'mlp')
    total += size * top_k // num_experts if routed else size
  return total


# Hugging Face's mistralai/Mixtral-8x7B-v0.1 (MixtralConfig: hidden 4096, 32 layers, 32
# heads, 8 key/value heads, intermediate 14336, 8 local experts, 2 per token, vocabulary
# 32000, rope_theta 1e6, 32768 positions, RMS eps 1e-5, untied head; router aux loss
# coefficient 0.02 when enabled).
VARIANTS = {
    'mixtral-8x7b': dict(num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096,
                         mlp_dim=14336, max_length=32768, rope_max_wavelength=1e6,
                         num_experts=8, top_k=2, balance_loss_weight=0.02),
}
