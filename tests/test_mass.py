"""MASS (arch/sequence/mass.py): the fragment the encoder loses, the decoder's input,
the loss on the fragment alone, and the config's exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import mass
from arch.task import ConfigError
from conftest import check_resumes_alike, load_config, train_spec

SPEC = 'mass_pydoc.py'
TINY_RUN = dict(total_steps=4, ckpt_every=2, log_every=1, eval_every=4, batch_size=4,
                model__num_heads=1, model__embed_dim=16, model__mlp_dim=32)


def windows(b=64, l=40, seed=0):
  rng = np.random.default_rng(seed)
  t = rng.integers(vocab.NUM_SPECIAL, vocab.BYTE_VOCAB_SIZE, (b, l)).astype(np.int32)
  lengths = rng.integers(1, l + 1, b)
  lengths[:4] = l
  t[np.arange(l)[None] >= lengths[:, None]] = vocab.PAD
  return jnp.asarray(t), lengths


def test_one_contiguous_fragment_of_half_the_real_tokens():
  t, lengths = windows()
  src, dec_in, frag = jax.jit(lambda r, t: mass.corrupt(r, t, vocab_size=260))(
      jax.random.key(0), t)
  t, src, dec_in, frag = map(np.asarray, (t, src, dec_in, frag))
  starts = []
  for row in range(len(t)):
    n = lengths[row]
    idx = np.flatnonzero(frag[row])
    k = max(1, int(np.round(0.5 * n)))
    assert len(idx) == k and (np.diff(idx) == 1).all() and idx[-1] < n  # contiguous, real
    u = idx[0]
    starts.append(u / max(n - k, 1))
    # the encoder keeps every token outside the fragment (padding included)
    np.testing.assert_array_equal(src[row][~frag[row]], t[row][~frag[row]])
    # the decoder sees the fragment shifted right behind a <mask>, and <mask> elsewhere
    want = np.full_like(t[row], vocab.MASK)
    want[idx[1:]] = t[row][idx[:-1]]
    np.testing.assert_array_equal(dec_in[row], want)
  starts = np.asarray(starts)
  assert starts.min() < 0.2 and starts.max() > 0.8  # the start is drawn, not fixed


def test_fragment_replacement_is_80_10_10():
  t, _ = windows(b=512, l=64, seed=1)
  src, _, frag = mass.corrupt(jax.random.key(2), t, vocab_size=260)
  src, t, frag = map(np.asarray, (src, t, frag))
  masked = (src == vocab.MASK)[frag].mean()
  kept = (src == t)[frag].mean()  # a random draw equal to the token counts as kept
  assert 0.78 < masked < 0.82 and 0.09 < kept < 0.115, (masked, kept)
  assert (src[frag] >= vocab.MASK).all()  # random tokens are real tokens, never specials


def test_loss_covers_the_fragment_only():
  """The loss's gradient with respect to the logits vanishes outside the fragment."""
  config = load_config(SPEC)
  task = mass.make(config)
  t, _ = windows(b=4, l=128, seed=3)
  variables = task.init(jax.random.key(0), {'tokens': t})
  rng = jax.random.key(5)
  _, _, frag = mass.corrupt(jax.random.split(rng)[0], t, vocab_size=260)

  def loss_of_logit_shift(delta):
    def shifted(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      return out + delta if context.method_name == 'logits' else out
    with nn.intercept_methods(shifted):
      return task.loss(variables, {'tokens': t}, rng)[0]

  g = jax.grad(loss_of_logit_shift)(jnp.zeros((4, 128, 260)))
  reach = np.abs(np.asarray(g)).sum(-1) > 0
  np.testing.assert_array_equal(reach, np.asarray(frag))


@pytest.mark.parametrize('kwargs, match', [
    (dict(fragment_ratio=0.0), 'fragment_ratio'),
    (dict(mask_prob=0.95, random_prob=0.1), 'random_prob'),
    (dict(span=3), 'unknown'),
])
def test_inconsistent_configs_fail_clearly(kwargs, match):
  config = load_config(SPEC)
  with config.unlocked():
    config.task_kwargs.update(kwargs)
  with pytest.raises(ConfigError, match=match):
    mass.make(config)


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  train = lambda workdir, **kw: train_spec(SPEC, workdir, data_dir, **{**TINY_RUN, **kw})
  final = train(tmp_path / 'straight')
  assert set(final) >= {'loss', 'token_accuracy', 'perplexity'}
  straight, _, _ = check_resumes_alike(SPEC, train, tmp_path,
                                       must_have=('loss', 'fragment_fraction'),
                                       **{k: v for k, v in TINY_RUN.items()
                                          if k.startswith('model__') or k == 'batch_size'})
  assert all(0.45 < straight[s]['fragment_fraction'] < 0.55 for s in straight)
