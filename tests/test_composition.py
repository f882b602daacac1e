"""The README's "Composing models" example: research code outside arch/ and train/
(examples/captioner.py) trains through the one loop, and its cached greedy decoding
equals the teacher-forced argmax."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import load_config as _config


def test_captioner_trains_through_the_loop(tmp_path, data_dir):
  from train import loop
  config = _config('captioner_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'loss', 'token_accuracy', 'exact_match'}


def test_captioner_cached_decoding_matches_the_full_forward():
  from examples import captioner
  model = captioner.Model(width=16, encoder_depth=1, decoder_depth=2, num_heads=2, mlp_dim=32)
  image = jax.random.randint(jax.random.key(0), (2, 8, 8, 1), 0, 256).astype(jnp.uint8)
  tokens = jax.random.randint(jax.random.key(1), (2, 6), 4, 260)
  variables = model.init(jax.random.key(2), image, tokens)
  full = model.apply(variables, image, tokens)
  cache = model.init(jax.random.key(2), image, jnp.zeros((2, 6), jnp.int32),
                     decode=True)['cache']
  cache = jax.tree.map(jnp.zeros_like, cache)
  encoded = model.apply(variables, image, method=captioner.Model.encode)
  steps = []
  for i in range(6):
    logits, mutated = model.apply({**variables, 'cache': cache}, tokens[:, i:i + 1], encoded,
                                  decode=True, mutable=['cache'],
                                  method=captioner.Model.decode)
    cache = mutated['cache']
    steps.append(logits[:, 0])
  np.testing.assert_allclose(jnp.stack(steps, 1), full, rtol=1e-4, atol=1e-4)
