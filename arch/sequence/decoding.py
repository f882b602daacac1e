"""Autoregressive decoding over any model with a cache: greedy, temperature, top-k,
top-p (nucleus; Holtzman et al. 2020) sampling, and beam search with a length penalty
(Wu et al. 2016).

Everything takes a `step_fn(tokens_B1, cache) -> (logits_BV, cache)` closure, so GPT's
KV cache, an RNN's carry and an encoder-decoder's decoder all decode the same way. The
functions are pure and jit-able; loops are `lax.while_loop`s with static shapes, ending
early once every sequence has emitted `eos_id`.

Randomness is per row: row r at step i draws with `fold_in(fold_in(rng, row_ids[r]), i)`,
so a sample does not depend on how many others are in the batch or how the batch is
sharded over devices.

Dimension key: B batch, K beams, V vocabulary, N new tokens.
"""

import jax
import jax.numpy as jnp

from arch.task import ConfigError, row_keys

NEG_INF = -1e9


def check_options(max_new_tokens: int = 1, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, beam_size: int = 1) -> None:
  """A ConfigError for decoding options out of range (the sampler shows it as one line)."""
  for ok, what in ((max_new_tokens >= 1, f'max_new_tokens must be >= 1, got {max_new_tokens}'),
                   (temperature >= 0, f'temperature must be >= 0, got {temperature}'),
                   (top_k >= 0, f'top_k must be >= 0, got {top_k}'),
                   (0 < top_p <= 1, f'top_p must be in (0, 1], got {top_p}'),
                   (beam_size >= 1, f'beam_size must be >= 1, got {beam_size}')):
    if not ok:
      raise ConfigError(what)


def sample_logits(logits_BV, rng_B, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0):
  """One token per row: argmax when temperature == 0, else a draw from
  softmax(logits / temperature) restricted to the top_k tokens and/or the smallest set
  whose probability reaches top_p. `rng_B` holds one key per row."""
  logits_BV = logits_BV.astype(jnp.float32)
  if temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / temperature
  if top_k:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, NEG_INF, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    # Keep a token if the mass strictly before it is < top_p (the first always stays).
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    cutoff_B1 = jnp.min(jnp.where(before_BV < top_p, sorted_BV, jnp.inf), axis=-1,
                        keepdims=True)
    logits_BV = jnp.where(logits_BV < cutoff_B1, NEG_INF, logits_BV)
  return jax.vmap(lambda k, l: jax.random.categorical(k, l))(rng_B, logits_BV).astype(jnp.int32)


def generate(step_fn, cache, first_logits_BV, rng, max_new_tokens: int, *, eos_id: int,
             pad_id: int = 0, row_ids_B=None, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0):
  """Samples up to `max_new_tokens` tokens after a prefilled cache.

  `first_logits_BV` are the logits for the first new token (the prefill's last position).
  Returns tokens (B, N): each row ends at its first `eos_id`, then `pad_id`.
  """
  check_options(max_new_tokens, temperature, top_k, top_p)
  b = first_logits_BV.shape[0]
  row_ids_B = jnp.arange(b) if row_ids_B is None else row_ids_B
  row_keys_B = row_keys(rng, row_ids_B)

  def cond(carry):
    i, _, _, done_B, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done_B)

  def body(carry):
    i, logits_BV, cache, done_B, out_BN = carry
    keys_B = jax.vmap(lambda k: jax.random.fold_in(k, i))(row_keys_B)
    tok_B = sample_logits(logits_BV, keys_B, temperature, top_k, top_p)
    tok_B = jnp.where(done_B, pad_id, tok_B)
    out_BN = out_BN.at[:, i].set(tok_B)
    done_B = done_B | (tok_B == eos_id)
    logits_BV, cache = step_fn(tok_B[:, None], cache)
    return i + 1, logits_BV, cache, done_B, out_BN

  out_BN = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
  carry = (jnp.array(0), first_logits_BV, cache, jnp.zeros((b,), bool), out_BN)
  return jax.lax.while_loop(cond, body, carry)[-1]


def repeat_batch(tree, k: int):
  """Repeats every leaf with a leading batch axis k times (b0 b0 b1 b1 ...); scalars
  (cache indices) stay."""
  return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0) if jnp.ndim(x) else x, tree)


def _gather_beams(tree, idx_BK, b: int, k: int):
  """Selects beams `idx_BK` (indices into the k beams of each row) from leaves (B*K, ...)."""
  flat = (jnp.arange(b)[:, None] * k + idx_BK).reshape(-1)
  return jax.tree.map(lambda x: x[flat] if jnp.ndim(x) else x, tree)


def beam_search(step_fn, cache, first_logits_BV, beam_size: int, max_new_tokens: int, *,
                eos_id: int, pad_id: int = 0, length_penalty: float = 0.0):
  """Beam search after a prefilled cache (batch B); returns (tokens (B, N), scores (B,)).

  Each step ranks all one-token extensions of the live hypotheses; those among the
  `beam_size` best that end in `eos_id` finish, and the best `beam_size` that do not stay
  live. The `beam_size` best finished ones are kept,
  scored by log-probability / ((5 + length) / 6) ** length_penalty (GNMT's; 0 = raw
  log-probability). With beam_size=1 and length_penalty=0 this is greedy decoding.
  """
  check_options(max_new_tokens, beam_size=beam_size)
  b, v = first_logits_BV.shape
  k = beam_size
  cache = repeat_batch(cache, k)
  logits = repeat_batch(first_logits_BV, k)
  # Only the first beam is live at the start: the K copies are identical.
  alive_lp_BK = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1)), (b, 1))
  alive_seq_BKN = jnp.full((b, k, max_new_tokens), pad_id, jnp.int32)
  fin_seq_BKN = jnp.full((b, k, max_new_tokens), pad_id, jnp.int32)
  fin_score_BK = jnp.full((b, k), NEG_INF)

  def penalty(length):
    return ((5.0 + length) / 6.0) ** length_penalty

  def cond(carry):
    i, _, _, alive_lp_BK, _, _, fin_score_BK = carry
    # Live beams can only lose log-probability; at best they get the largest penalty.
    best_possible_B = alive_lp_BK[:, 0] / (penalty(max_new_tokens) if length_penalty > 0
                                           else 1.0)
    worst_fin_B = fin_score_BK[:, -1]
    return (i < max_new_tokens) & ~jnp.all(worst_fin_B >= best_possible_B)

  def body(carry):
    i, logits, cache, alive_lp_BK, alive_seq_BKN, fin_seq_BKN, fin_score_BK = carry
    logp_BKV = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, k, v)
    cand_BKV = alive_lp_BK[:, :, None] + logp_BKV
    top_lp_B2K, top_idx_B2K = jax.lax.top_k(cand_BKV.reshape(b, k * v), 2 * k)
    beam_B2K, tok_B2K = top_idx_B2K // v, (top_idx_B2K % v).astype(jnp.int32)
    seq_B2KN = jnp.take_along_axis(alive_seq_BKN, beam_B2K[:, :, None], axis=1)
    seq_B2KN = seq_B2KN.at[:, :, i].set(tok_B2K)
    is_eos_B2K = tok_B2K == eos_id
    # Finished: candidates within the beam (the K best) that emitted EOS, merged with the
    # kept finished ones. (Counting only the K best keeps beam 1 identical to greedy.)
    in_beam_B2K = jnp.arange(2 * k)[None, :] < k
    new_fin_B2K = jnp.where(is_eos_B2K & in_beam_B2K, top_lp_B2K / penalty(i + 1.0), NEG_INF)
    all_fin_B3K = jnp.concatenate([fin_score_BK, new_fin_B2K], axis=1)
    all_seq_B3KN = jnp.concatenate([fin_seq_BKN, seq_B2KN], axis=1)
    fin_score_BK, fin_idx_BK = jax.lax.top_k(all_fin_B3K, k)
    fin_seq_BKN = jnp.take_along_axis(all_seq_B3KN, fin_idx_BK[:, :, None], axis=1)
    # Alive: the best K candidates that did not emit EOS.
    alive_B2K = jnp.where(is_eos_B2K, NEG_INF, top_lp_B2K)
    alive_lp_BK, keep_BK = jax.lax.top_k(alive_B2K, k)
    alive_seq_BKN = jnp.take_along_axis(seq_B2KN, keep_BK[:, :, None], axis=1)
    parent_BK = jnp.take_along_axis(beam_B2K, keep_BK, axis=1)
    cache = _gather_beams(cache, parent_BK, b, k)
    tok_BK = jnp.take_along_axis(tok_B2K, keep_BK, axis=1)
    logits, cache = step_fn(tok_BK.reshape(b * k, 1), cache)
    return i + 1, logits, cache, alive_lp_BK, alive_seq_BKN, fin_seq_BKN, fin_score_BK

  carry = (jnp.array(0), logits, cache, alive_lp_BK, alive_seq_BKN, fin_seq_BKN, fin_score_BK)
  _, _, _, alive_lp_BK, alive_seq_BKN, fin_seq_BKN, fin_score_BK = jax.lax.while_loop(
      cond, body, carry)
  # Rows with no finished hypothesis return their best live one.
  any_fin_B = fin_score_BK[:, 0] > NEG_INF / 2
  alive_score_B = alive_lp_BK[:, 0] / penalty(max_new_tokens)
  tokens_BN = jnp.where(any_fin_B[:, None], fin_seq_BKN[:, 0], alive_seq_BKN[:, 0])
  return tokens_BN, jnp.where(any_fin_B, fin_score_BK[:, 0], alive_score_B)
