"""Flamingo: zero gates are the plain LM, the media mask, the frozen split, the QA table,
and a real run through the loop (frozen runs trained first) and the sampler."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.multimodal import flamingo
from arch import vocab
from arch.sequence import gpt
from conftest import load_config, read_metrics, run_sample

LM = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, num_layers=2, num_heads=2, embed_dim=16,
          max_length=32)


def _model(cross_every=1):
  lm = flamingo.GatedLM(**LM, cross_every=cross_every, cross_heads=2, cross_head_dim=8,
                        cross_mlp_ratio=2)
  return flamingo.Model(lm, flamingo.PerceiverResampler(num_latents=3, depth=1, num_heads=2,
                                                        head_dim=4, max_frames=2))


def _inputs(b=2, t=7, m=2, f=1, p=5, d=12, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  tokens = jax.random.randint(k1, (b, t), vocab.NUM_SPECIAL, vocab.BYTE_VOCAB_SIZE)
  return tokens, jax.random.normal(k2, (b, m, f, p, d))


def _is_gate(path):
  return jax.tree_util.keystr(path).endswith("_gate']")


def _set_gates(params, value):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full_like(x, value) if _is_gate(path) else x, params)


def _init(model, *args):
  return nn.meta.unbox(model.init(jax.random.key(1), *args))['params']


def test_zero_gates_give_the_plain_language_model_exactly():
  model = _model()
  tokens, media = _inputs()
  params = _init(model, tokens, media)
  trained, frozen = flamingo.split_params(params)
  plain = gpt.Model(**LM).apply({'params': frozen}, tokens)
  out = model.apply({'params': params}, tokens, media)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))
  # ... whatever the images: nothing from them gets through a closed gate.
  other = _inputs(seed=1)[1]  # (not media + c: the resampler's LayerNorms remove that)
  out2 = model.apply({'params': params}, tokens, other)
  np.testing.assert_array_equal(np.asarray(out2), np.asarray(plain))
  # Opened gates let the images in (so the equality above is not vacuous).
  opened = {'params': _set_gates(params, 0.5)}
  assert not np.allclose(model.apply(opened, tokens, media), plain, atol=1e-4)
  assert not np.allclose(model.apply(opened, tokens, media),
                         model.apply(opened, tokens, other), atol=1e-4)
  assert set(trained['lm']) == {'xattn0', 'xattn1'}
  assert jax.tree.structure(frozen) == jax.tree.structure(
      _init(gpt.Model(**LM), tokens))


def test_gated_blocks_go_before_every_kth_layer():
  tokens, media = _inputs()
  params = _init(_model(cross_every=2), tokens, media)
  assert sorted(k for k in params['lm'] if k.startswith('xattn')) == ['xattn0']


def test_each_token_sees_only_the_last_medium_before_it():
  model = _model()
  tokens, media = _inputs(b=1, t=6, m=2)
  other = _inputs(b=1, t=6, m=2, seed=3)[1]
  params = _set_gates(_init(model, tokens, media), 1.0)
  index = jnp.array([[-1, -1, 0, 0, 1, 1]])
  base = model.apply({'params': params}, tokens, media, index)
  # Changing medium 1 changes only the tokens after it (positions 4, 5): causal LM
  # positions 2, 3 do not see them, and positions 0, 1 see no medium at all.
  changed = model.apply({'params': params}, tokens, media.at[:, 1].set(other[:, 1]), index)
  diff = np.abs(np.asarray(changed - base)).max(-1)[0]
  assert np.all(diff[:4] == 0) and np.all(diff[4:] > 1e-4), diff
  # Changing medium 0 changes tokens 2, 3 directly and, through causal attention, 4, 5.
  changed = model.apply({'params': params}, tokens, media.at[:, 0].set(other[:, 0]), index)
  diff = np.abs(np.asarray(changed - base)).max(-1)[0]
  assert np.all(diff[:2] == 0) and np.all(diff[2:] > 1e-4), diff


def test_resampler_gives_fixed_latents_per_medium_and_uses_every_frame():
  r = flamingo.PerceiverResampler(num_latents=3, depth=2, num_heads=2, head_dim=4,
                                  max_frames=2)
  _, media = _inputs(b=2, m=3, f=2, p=5, d=12)
  variables = r.init(jax.random.key(0), media)
  out = r.apply(variables, media)
  assert out.shape == (2, 3, 3, 12)
  # Every medium is resampled on its own; the last frame matters.
  out2 = r.apply(variables, media.at[:, 1, 1].multiply(-1.0))
  assert np.allclose(out2[:, 0], out[:, 0]) and np.allclose(out2[:, 2], out[:, 2])
  assert not np.allclose(out2[:, 1], out[:, 1])
  with pytest.raises(ValueError, match='frames'):
    r.apply(variables, jnp.concatenate([media, media], axis=2))


def test_qa_table_marks_exactly_the_answer_and_its_end():
  tokens, mask = flamingo.qa_table(48)
  for q, (_, question, answer) in enumerate(flamingo.QUESTIONS):
    for d in (0, 4, 9):
      targets = tokens[q, d, 1:][mask[q, d] > 0]
      assert targets[-1] == vocab.EOS
      text = bytes(int(t) - vocab.NUM_SPECIAL for t in targets[:-1]).decode()
      assert text == ' ' + answer(d)
      prompt = bytes(int(t) - vocab.NUM_SPECIAL for t in tokens[q, d, 1:][mask[q, d] == 0]
                     if t >= vocab.NUM_SPECIAL).decode()
      assert prompt == flamingo.prompt_text(question)
  assert flamingo.QUESTIONS[3][2](9) == 'ten'


def _tiny(tmp_path, data_dir, **overrides):
  from train import loop
  from train import core
  config = load_config('flamingo_digits.py:tiny', data__data_dir=data_dir, **overrides)
  core.resolve_frozen(config)
  for name in ('vision', 'lm'):
    for k, v in dict(total_steps=2, eval_every=2, log_every=2, ckpt_every=2).items():
      config.frozen[name].config[k] = v
  for name in config.frozen.vision.config.evals:
    config.frozen.vision.config.evals[name].every = -1
  return config


def test_frozen_networks_get_no_gradient_and_stay_in_their_collections(tmp_path, data_dir):
  from train import loop
  from train import core
  config = _tiny(tmp_path, data_dir)
  task = core.load_task(config)
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch(4).items()}
  variables = jax.jit(task.init)(jax.random.key(0), batch)
  assert set(variables) == {'params', 'lm', 'vision'}
  assert set(variables['params']) == {'lm', 'resampler'}
  assert all(k.startswith('xattn') for k in variables['params']['lm'])
  grads = jax.jit(jax.grad(lambda p: task.loss({**variables, 'params': p}, batch,
                                               jax.random.key(1))[0]))(variables['params'])
  # Only the gates see a gradient at a closed-gate start (tanh'(0) = 1).
  gate_grads = [g for path, g in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(grads))
                if _is_gate(path)]
  assert gate_grads and any(float(jnp.abs(g)) > 0 for g in gate_grads)


def test_flamingo_digits_trains_its_frozen_runs_then_answers_through_the_sampler(
    tmp_path, data_dir):
  from train import loop
  from train import core
  config = _tiny(tmp_path, data_dir, total_steps=2, eval_every=2, log_every=1, ckpt_every=2)
  result = loop.train_and_evaluate(config, str(tmp_path))
  kinds = {f'accuracy_{k}' for k, _, _ in flamingo.QUESTIONS}
  assert {'accuracy'} | kinds <= set(result)
  assert np.isclose(result['accuracy'], np.mean([result[k] for k in kinds]))
  assert sorted(read_metrics(tmp_path / 'frozen_lm', 'eval')) == [2]
  assert sorted(read_metrics(tmp_path / 'frozen_vision', 'eval')) == [2]
  # The sampler answers about the test split's first images.
  proc = run_sample(['--config', 'configs/flamingo_digits.py:tiny', '--workdir', tmp_path,
                     '--num_samples', '3', '--max_new_tokens', '4',
                     '--prompt', 'Q: What digit is this? A:'], data_dir)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count('Q: What digit is this? A:') == 3
  assert 'test example 2, label' in proc.stdout
