"""Mixture-of-Experts language models (arch/layers/moe.py, arch/sequence/moe.py) on the English
text of Python's help() topics (`pydoc_text`), byte-level by default.

  python -m train --config configs/moe_pydoc.py --workdir runs/moe_pydoc
  python -m train --config configs/moe_pydoc.py:routing=switch --workdir runs/switch_pydoc
  python -m train --config configs/moe_pydoc.py --workdir runs/moe_ep --config.mesh.expert=8
  python -m train.sample --config configs/moe_pydoc.py --workdir runs/moe_pydoc \\
      --prompt 'The import statement' --num_samples 4
  python -m train.summary --config configs/moe_pydoc.py:variant=mixtral-8x7b

Arguments: `variant=cpu` (default), `tiny` (tests), or the published sizes
`mixtral-8x7b` (Hugging Face's MixtralForCausalLM: 46,702,792,704 parameters, 12,879,925,248
active per token) and `switch-base-8` (SwitchTransformersForConditionalGeneration,
619,339,008 parameters, 222,977,280 active): the Switch Transformer is an encoder-decoder,
so that variant is the T5 model with MoE layers (arch/sequence/t5.py) on BART's denoising
task (configs/bart_pydoc.py's text infilling) rather than the decoder LM. Published sizes
use a byte-level BPE fitted to the train split, their vocabulary; they are here to be
counted and sharded, not trained on this CPU. `routing=mixtral|switch|deepseek` picks the
cpu variant's layer:

  mixtral   8 SwiGLU experts of width 384, top-2, gates renormalised over the two
  switch    8 experts of width 768, top-1, the gate the router's probability
  deepseek  1 shared expert and 16 routed experts of width 192, top-3 (DeepSeekMoE's
            fine-grained and shared experts), gates the router's probabilities

Each spends the same expert width per token, 768, as llama_pydoc's cpu variant's dense
SwiGLU MLP: the same active parameters (plus the router's 256 x E per layer) with 4x
(mixtral), 8x (switch) or 4.25x (deepseek) the feed-forward parameters. Everything else is
llama_pydoc's cpu variant (4 layers, width 256, 4 heads, 2 key/value heads, dropout 0.1)
and gpt_pydoc's data and schedule (32 x 128 bytes a step, 600 steps). Training capacity
factor 1.25 with token dropping (tokens of one 128-byte sequence compete for slots),
dropless in evaluation and sampling; load-balancing loss weight 0.01, router z-loss
1e-3. Train metrics add `aux_loss`, `moe_balance_loss` (1 = uniform routing),
`moe_dropped`, and `expert_load_{e}` (each expert's share of the assignments).

Expert parallelism: `--config.mesh.expert=N` splits the experts over N devices (and the
batch over them too); 8 devices give the 1-device loss (tests/test_moe.py).

Measured 2026-12-06 on the 2-core CPU (1 device, jit) while other training jobs loaded it
(load average 8-13), so the wall time is an upper bound: the default (mixtral routing,
10.37 M parameters, 3.28 M active) reaches validation 1.467 / 1.288 / 1.238 nats/byte at
steps 200 / 400 / 600 (token accuracy 0.667) in 93 min; llama_pydoc's cpu variant, the
dense model with the same active parameters, 1.509 / 1.308 / 1.256 on the same data and
schedule (10.9 min unloaded). Expert load at step 600 (share of assignments, averaged
over the 4 layers; 0.125 is even): 0.116-0.131, balance loss 1.024, 2.0% of the
assignments dropped at capacity factor 1.25 (7.8% at step 100).
"""

from configs import recipes
from train import config_lib
from train.errors import UserError

PUBLISHED = ('mixtral-8x7b', 'switch-base-8')
ROUTINGS = {
    'mixtral': dict(num_experts=8, expert_dim=384, top_k=2, normalize_gates=True),
    'switch': dict(num_experts=8, expert_dim=768, top_k=1, normalize_gates=False),
    'deepseek': dict(num_experts=16, expert_dim=192, top_k=3, num_shared_experts=1,
                     normalize_gates=False),
}
TRAINING = dict(capacity_factor=1.25, eval_capacity_factor=0.0, balance_loss_weight=0.01,
                z_loss_weight=1e-3)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', routing='mixtral', tokenizer='')
  if a.routing not in ROUTINGS:
    raise UserError(f'unknown routing {a.routing!r}; valid: {", ".join(ROUTINGS)}')
  if a.variant == 'switch-base-8':
    return switch_base_8(a.tokenizer)
  published = {}
  if a.variant == 'mixtral-8x7b':
    from arch.sequence import moe
    model = moe.VARIANTS[a.variant]
    published = {a.variant: (model, 32000, 4097)}
  routing = dict(ROUTINGS[a.routing], **TRAINING)
  return recipes.pydoc_lm(
      'sequence.moe', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=4, num_heads=4, num_kv_heads=2, embed_dim=256, mlp_dim=768,
               max_length=128, dropout_rate=0.1, **routing),
      tiny=dict(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, mlp_dim=64,
                max_length=64, **dict(routing, num_experts=4, expert_dim=32)))


def switch_base_8(tokenizer: str):
  """The Switch Transformer's base size on configs/bart_pydoc.py's denoising task."""
  from arch.sequence import t5
  c = config_lib.base()
  c.task = 'sequence.denoise'
  c.task_kwargs = dict(mask_ratio=0.3, poisson_lambda=3.0, permute_sentences=False,
                       sentence_end_ids=(), src_length=0)
  c.model_name = 'sequence.t5'
  c.model = dict(t5.VARIANTS['switch-base-8'], vocab_size=32128, dropout_rate=0.1)
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.text_features = ('text',)
  c.data.tokenizer = tokenizer or 'bpe'
  c.data.vocab_size = 32128
  c.data.pack = 512
  c.batch_size = 8
  c.total_steps = 600
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
