"""BART (Lewis et al. 2020) denoising on the English text of Python's help() topics
(`pydoc_text`), byte-level: text infilling (Poisson(3) spans over 30% of each window, one
<mask> per span); the decoder rebuilds the window.

  python -m train --config configs/bart_pydoc.py --workdir runs/bart_pydoc
  python -m train.sample --config configs/bart_pydoc.py --workdir runs/bart_pydoc \\
      --prompt 'A class definition <mask> a class object.'   # no --prompt: eval windows
  python -m train.summary --config configs/bart_pydoc.py:variant=base

Arguments: `variant=small` (default: 2+2 layers, width 128, 4 heads, trained below),
`tiny` (tests), or the published sizes `base|large` (Hugging Face's facebook/bart-base
and facebook/bart-large: vocabulary 50265, 1024 positions; `train.summary` equals
BartForConditionalGeneration's parameter count, 139,420,416 and 406,291,456). The
sampler prints each corrupted source (a prompt that holds '<mask>' is taken as it is, any
other gets the training noise) and the greedy reconstruction.

Measured on a 2-core x86-64 CPU shared with other jobs (2026-12-07, 1 device, jit, load
average 8-17): small, 3,000 steps of batch 8 in 19 min 17 s wall; validation `loss` 1.076
nats per byte (perplexity 2.93), `token_accuracy` 0.702 = `unmasked_token_accuracy` 0.774
(the bytes the source keeps: copied) and `masked_token_accuracy` 0.538 (infilled).
Copying through cross-attention arrives late and suddenly, once the decoder's byte LM is
learnt: train accuracy on kept bytes equals that on masked ones until step ~750 and
leaves it from step ~1,000 (0.74 against 0.49 at 2,000). The earlier schedule of 1,800
steps decayed the learning rate before that (validation loss 1.750, accuracy 0.520 on
kept and masked bytes alike: a byte LM that ignores its source). The onset grows with
the window: 64-byte windows (`--config.data.pack=64`, 2,000 steps, 8.5 min) copy from step
~650 (kept 0.783, masked 0.472, loss 1.157); on random bytes with no masking, copying is
learnt by step ~130 at 32 bytes and not within 700 steps at 48 or 64 (lr 1e-3, batch 8).
The noise, the shift behind <s>, the loss over the whole window, the masks, the position
offset and the tied head are as BART's (tests/test_bart.py).
"""

from train import config_lib
from train.errors import UserError

SMALL = dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=4, embed_dim=128,
             mlp_dim=512, max_length=128)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='small')
  c = config_lib.base()
  c.task = 'sequence.denoise'
  c.task_kwargs = dict(mask_ratio=0.3, poisson_lambda=3.0, permute_sentences=False,
                       sentence_end_ids=(), src_length=0)  # 0: data.pack
  c.model_name = 'sequence.bart'
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  c.data.pack = 128

  if a.variant in ('base', 'large'):
    from arch.sequence import bart
    c.model = dict(bart.VARIANTS[a.variant], vocab_size=50265, max_length=1024,
                   dropout_rate=0.1)
    c.batch_size = 8
  elif a.variant == 'small':
    c.model = dict(SMALL, vocab_size=260)
    c.batch_size = 8  # on 2 CPU cores, more small steps beat fewer large ones
  elif a.variant == 'tiny':
    c.model = dict(vocab_size=260, num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                   embed_dim=32, mlp_dim=64, max_length=128)
    c.batch_size = 8
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: small, tiny, base, large')

  c.sample.max_new_tokens = 0  # the window length
  c.sample.temperature = 0.0  # greedy reconstruction
  c.total_steps = 3000  # copying starts near step 1,000: 1,800 decayed the rate too soon
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
