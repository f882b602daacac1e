"""MASS: masked sequence-to-sequence pre-training (Song et al. 2019), over any
encoder-decoder network (`encode`/`decode`, e.g. BART's or the Transformer's).

For each window of n real tokens, one contiguous fragment of k = round(`fragment_ratio`
* n) tokens (at least 1) starting at u ~ Uniform{0..n-k} is hidden from the encoder: each
of its tokens becomes <mask> (80%), a random token (10%) or stays (10%), as in BERT and
the paper; the source keeps the window's length. The decoder predicts the fragment alone:
its input at position t is the token before it, x[t-1], for u < t < u+k, the <mask> id
at t = u (where the fragment starts) and <mask> everywhere outside the fragment (the
tokens the encoder sees are hidden from the decoder), so it cannot copy them and learns
from the encoder's context. The loss and accuracy cover the fragment's k tokens only;
positions are the window's own, so the decoder knows where the fragment sits.

k = 1 is BERT's masked LM with a decoder; k = n is a decoder LM whose encoder sees
nothing: the paper's 50% sits between the two.

Config: `task_kwargs` (`Options`): fragment_ratio (0.5), mask_prob (0.8), random_prob
(0.1). Batches: {'tokens': (B, L)} windows of the packed text (train/text.py). Train
metrics `loss`, `token_accuracy` (over the fragments), `fragment_fraction`; eval the
split's per-token `loss`, `token_accuracy`, `perplexity` (a fixed noise key). Noise is
keyed by each window's content (`denoise.row_keys`), so it ignores the batch layout.

Dimension key: B batch, L window length.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import arch
from arch import vocab
from arch.sequence import denoise, lm
from arch.task import ConfigError, Task, parse_options

EVAL_SEED = 0


def _fragment_one(rng, tokens_L, fragment_ratio, mask_prob, random_prob, vocab_size):
  """(source (L,), decoder input (L,), fragment (L,) bool) of one left-aligned window."""
  l = tokens_L.shape[0]
  valid_L = tokens_L != vocab.PAD
  n = valid_L.sum()
  k = jnp.clip(jnp.round(fragment_ratio * n).astype(jnp.int32), 1, jnp.maximum(n, 1))
  start_rng, kind_rng, tok_rng = jax.random.split(rng, 3)
  u = jax.random.randint(start_rng, (), 0, jnp.maximum(n - k, 0) + 1)
  pos_L = jnp.arange(l)
  frag_L = (pos_L >= u) & (pos_L < u + k) & valid_L
  draw_L = jax.random.uniform(kind_rng, (l,))
  random_L = jax.random.randint(tok_rng, (l,), vocab.NUM_SPECIAL, vocab_size)
  replaced_L = jnp.where(draw_L < mask_prob, vocab.MASK,
                         jnp.where(draw_L < mask_prob + random_prob, random_L, tokens_L))
  src_L = jnp.where(frag_L, replaced_L.astype(tokens_L.dtype), tokens_L)
  prev_L = jnp.concatenate([jnp.full((1,), vocab.MASK, tokens_L.dtype), tokens_L[:-1]])
  dec_in_L = jnp.where(frag_L & (pos_L > u), prev_L, vocab.MASK).astype(tokens_L.dtype)
  return src_L, dec_in_L, frag_L


def corrupt(rng, tokens_BL, *, vocab_size, fragment_ratio=0.5, mask_prob=0.8,
            random_prob=0.1):
  """MASS's noise on a batch of left-aligned windows (B, L), jit-able: (source (B, L),
  decoder input (B, L), fragment (B, L) bool: the positions the decoder predicts)."""
  keys_B = denoise.row_keys(rng, tokens_BL)
  return jax.vmap(lambda r, t: _fragment_one(r, t, fragment_ratio, mask_prob, random_prob,
                                             vocab_size))(keys_B, tokens_BL)


@dataclasses.dataclass(frozen=True)
class Options:
  """MASS's task_kwargs."""
  fragment_ratio: float = 0.5  # of the window's real tokens, in one contiguous fragment
  mask_prob: float = 0.8  # a fragment token's chance of becoming <mask> in the source
  random_prob: float = 0.1  # ... of becoming a random token (else it stays)


def noise_options(opts, config, family: str):
  """(window length, `corrupt`'s keyword arguments) from the task's fragment_ratio,
  mask_prob and random_prob and config.data.pack, checked (ConfigError naming `family`);
  ProphetNet pre-trains under the same noise."""
  vocab.check_model(config)
  length = int(config.data.get('pack') or 0)
  if length < 2:
    raise ConfigError(f'{family} needs config.data.pack >= 2 (the window length), '
                      f'got {length}')
  ratio, mask_prob, random_prob = (float(opts.fragment_ratio), float(opts.mask_prob),
                                   float(opts.random_prob))
  if not 0.0 < ratio <= 1.0:
    raise ConfigError(f'task_kwargs.fragment_ratio={ratio}: must be in (0, 1]')
  if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
    raise ConfigError(f'task_kwargs.mask_prob={mask_prob} and random_prob={random_prob}: '
                      'must be >= 0 with a sum <= 1')
  return length, dict(vocab_size=int(config.model.vocab_size), fragment_ratio=ratio,
                      mask_prob=mask_prob, random_prob=random_prob)


def make(config) -> Task:
  opts = parse_options(Options, config)
  length, noise = noise_options(opts, config, 'MASS')
  model = arch.model_from_config(config)
  if not (hasattr(model, 'encode') and hasattr(model, 'decode')):
    raise ConfigError(f'MASS needs an encoder-decoder (encode/decode methods); '
                      f'{config.model_name!r} has none')
  max_length = getattr(model, 'max_length', None)
  if max_length is not None and length > max_length:
    raise ConfigError(f'config.model.max_length={max_length} is shorter than the window '
                      f'(data.pack={length})')

  def forward(variables, batch, rng, train, dropout_rng=None):
    tokens = batch['tokens']
    src, dec_in, frag = corrupt(rng, tokens, **noise)
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    logits = model.apply(variables, src, dec_in, train=train, rngs=rngs)
    w = frag.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens) * w
    correct = (logits.argmax(-1) == tokens) * w
    return nll, correct, w

  def init(rng, batch):
    tokens = batch['tokens']
    return model.init({'params': rng, 'dropout': rng}, tokens, tokens, train=False)

  def loss(variables, batch, rng):
    noise_rng, dropout_rng = jax.random.split(rng)
    nll, correct, w = forward(variables, batch, noise_rng, True, dropout_rng)
    n = jnp.maximum(w.sum(), 1.0)
    ce = nll.sum() / n
    real = jnp.maximum((batch['tokens'] != vocab.PAD).sum(), 1)
    return ce, ({'loss': ce, 'token_accuracy': correct.sum() / n,
                 'fragment_fraction': w.sum() / real}, {})

  def evaluate(variables, batch):
    nll, correct, w = forward(variables, batch, jax.random.key(EVAL_SEED), False)
    return {'nll': nll.sum(-1), 'correct': correct.sum(-1), 'tokens': w.sum(-1)}

  def finalize_eval(sums, count):
    del count
    return lm.token_metrics(sums, 'token_accuracy')

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch)
