"""Mixture of Experts: the layer against a per-token loop, capacity and priority, dropped
tokens through the residual, the auxiliary losses by hand, published sizes, expert
parallelism (all-to-all in the compiled step, 8 devices = 1), and the tiny configs through
the loop with an exact resume."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.layers import moe
from arch.sequence import moe as moe_lm, t5
from train import config_lib, summary

import lm_checks
from conftest import REPO, cli_env, read_metrics, run_cli

KEY = jax.random.key(0)
# Hugging Face transformers: sum(p.numel()) of MixtralForCausalLM (mistralai/Mixtral-8x7B-v0.1's
# config) and SwitchTransformersForConditionalGeneration (google/switch-base-8's).
HF = {'mixtral-8x7b': 46_702_792_704, 'switch-base-8': 619_339_008}
ACTIVE = {'mixtral-8x7b': 12_879_925_248, 'switch-base-8': 222_977_280}


@pytest.mark.parametrize('variant', sorted(HF))
def test_published_sizes_equal_hugging_face(variant):
  config = config_lib.load(f'configs/moe_pydoc.py:variant={variant}')
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == HF[variant]
  e, k = (8, 2) if variant == 'mixtral-8x7b' else (8, 1)
  assert moe_lm.active_params(params, e, k) == ACTIVE[variant]
  if variant == 'switch-base-8':  # every other layer of each stack from the second
    for stack in ('encoder', 'decoder'):
      sparse = [i for i in range(12) if 'router' in params[stack][f'layers_{i}']['mlp']]
      assert sparse == list(range(1, 12, 2))


def _layer_by_loop(params, x_BTD, top_k, normalize, act=jax.nn.silu):
  """The dropless layer token by token: sum over its top-k experts of gate * SwiGLU."""
  x = np.asarray(x_BTD, np.float64)
  router = np.asarray(params['router']['kernel'], np.float64)
  wi, up, wo = (np.asarray(params[n], np.float64) for n in ('wi', 'wi_up', 'wo'))
  out = np.zeros_like(x)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      logits = x[b, t] @ router
      p = np.exp(logits - logits.max())
      p /= p.sum()
      top = np.argsort(-p)[:top_k]
      gates = p[top] / (p[top].sum() if normalize else 1.0)
      for g, e in zip(gates, top):
        h = np.asarray(act(x[b, t] @ wi[e])) * (x[b, t] @ up[e])
        out[b, t] += g * (h @ wo[e])
  return out


@pytest.mark.parametrize('top_k,normalize', [(1, False), (2, True), (3, False)])
def test_dropless_layer_equals_a_per_token_loop(top_k, normalize):
  layer = moe.MoE(num_experts=5, expert_dim=6, top_k=top_k, normalize_gates=normalize,
                  capacity_factor=0.0)
  x = jax.random.normal(jax.random.key(1), (2, 7, 8))
  params = nn.meta.unbox(layer.init(KEY, x))['params']
  got, mutated = layer.apply({'params': params}, x, deterministic=False,
                             mutable=list(moe.COLLECTIONS))
  np.testing.assert_allclose(got, _layer_by_loop(params, x, top_k, normalize), rtol=1e-5,
                             atol=1e-5)
  assert float(mutated['moe']['dropped'][0]) == 0.0


def test_routing_respects_capacity_and_serves_first_choices_first():
  # 1 group of 4 tokens, 3 experts, top-2, capacity 2.
  probs = jnp.array([[[.6, .3, .1], [.5, .1, .4], [.7, .2, .1], [.1, .2, .7]]])
  dispatch, combine, chosen, kept = moe.route(probs, top_k=2, cap=2, normalize_gates=False)
  # First choices: tokens 0, 1, 2 -> expert 0 (slots 0, 1; token 2 dropped), token 3 ->
  # expert 2 (slot 0). Second choices: token 0 -> 1 (slot 0), 1 -> 2 (slot 1),
  # 2 -> 1 (slot 1), 3 -> 1 (full: dropped).
  np.testing.assert_array_equal(kept[0], [[1, 1, 0, 1], [1, 1, 1, 0]])
  d = np.asarray(dispatch[0])
  assert set(np.unique(d)) <= {0.0, 1.0}
  assert (d.sum(axis=0) <= 1).all()  # one token per slot
  assert (d.sum(axis=(0, 2)) <= 2).all()  # at most `cap` tokens per expert
  assert d[0, 0, 0] == d[1, 0, 1] == d[3, 2, 0] == d[0, 1, 0] == d[1, 2, 1] == d[2, 1, 1] == 1
  assert d.sum() == 6
  # The combine weights are the gates of the kept assignments.
  np.testing.assert_allclose(np.asarray(combine[0]).sum(axis=(1, 2)), [.9, .9, .2, .7],
                             rtol=1e-6)
  assert np.asarray(chosen).sum() == 8  # every choice, before dropping
  assert moe.capacity(128, 8, 2, 1.25) == 40 and moe.capacity(128, 8, 2, 0.0) == 128
  assert moe.capacity(4, 8, 1, 1.0, min_capacity=2) == 2


def test_dropped_tokens_pass_through_the_residual():
  block = moe.MoEBlock(2, 8, moe=dict(num_experts=2, expert_dim=8, top_k=1,
                                      capacity_factor=0.25, eval_capacity_factor=0.25),
                       pre_norm=True, norm='rms', activation='silu', gated_mlp=True,
                       use_bias=False)
  x = jax.random.normal(jax.random.key(2), (1, 8, 16))
  variables = nn.meta.unbox(block.init(KEY, x))
  out, mutated = block.apply(variables, x, causal=True, mutable=list(moe.COLLECTIONS))
  # Capacity 1 per expert for 8 tokens: 2 are routed, 6 dropped.
  assert float(mutated['moe']['mlp']['dropped'][0]) == pytest.approx(6 / 8)
  # The same block with zero expert outputs: the attention residual alone.
  silent = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.zeros_like(v) if jax.tree_util.keystr(p).endswith("['wo']") else v,
      variables)
  attn_only = block.apply(silent, x, causal=True)
  same = np.all(np.asarray(out == attn_only), axis=-1)[0]
  assert same.sum() == 6 and (~same).sum() == 2


def test_auxiliary_losses_by_hand():
  # Both tokens choose expert 0: f = (1, 0), P = (0.65, 0.35): E sum f P = 2 * 0.65.
  probs = jnp.array([[[.7, .3], [.6, .4]]])
  _, _, chosen, _ = moe.route(probs, top_k=1, cap=2, normalize_gates=False)
  assert float(moe.balance_loss(probs, chosen)) == pytest.approx(1.3, rel=1e-6)
  # Uniform routing gives 1 for any k; one expert taking every token gives E.
  uniform = jnp.full((1, 4, 4), 0.25)
  _, _, chosen, _ = moe.route(uniform, top_k=2, cap=4, normalize_gates=False)
  assert float(moe.balance_loss(uniform, chosen)) == pytest.approx(1.0, rel=1e-6)
  logits = jnp.array([[[1.0, 2.0], [0.0, 0.0]]])
  want = (np.log(np.exp(1) + np.exp(2)) ** 2 + np.log(2) ** 2) / 2
  assert float(moe.z_loss(logits)) == pytest.approx(want, rel=1e-6)


def test_lm_objective_adds_the_weighted_aux_losses():
  from arch.sequence import lm
  config = config_lib.load('configs/moe_pydoc.py:variant=tiny')
  task = lm.make(config)
  batch = {'tokens': jax.random.randint(KEY, (2, 33), vocab.NUM_SPECIAL, 260)}
  variables = nn.meta.unbox(task.init(KEY, batch))
  assert set(variables) == {'params'}  # nothing sown is kept as state
  total, (metrics, _) = jax.jit(task.loss)(variables, batch, jax.random.key(3))
  m = config.model
  # Two MoE layers, each weighted balance + z-loss.
  want = sum(m.balance_loss_weight * metrics['moe_balance_loss'] + m.z_loss_weight
             * metrics['moe_z_loss'] for _ in range(2))
  np.testing.assert_allclose(float(total - metrics['loss']), float(want), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['aux_loss']), float(want), rtol=1e-5)
  loads = [float(metrics[f'expert_load_{e}']) for e in range(m.num_experts)]
  assert sum(loads) == pytest.approx(1.0, rel=1e-6)


@pytest.fixture(scope='module')
def tiny():
  config = config_lib.load('configs/moe_pydoc.py:variant=tiny')
  model = moe_lm.Model(**config.model)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), vocab.NUM_SPECIAL, 260)
  variables = moe.without_sown(nn.meta.unbox(jax.jit(model.init)(KEY, tokens)))
  return config, model, variables, tokens


def test_logits_are_causal_and_sampling_follows_the_full_forward_pass(tiny):
  # Evaluation is dropless, so the cached one-token steps route as the full pass does.
  config, model, variables, tokens = tiny
  lm_checks.check_causal(model, variables, tokens)
  lm_checks.check_greedy_sampling(config, model, variables)
  lm_checks.check_beam_search(model, variables, tokens[:, :4])


def test_tiny_config_trains_resumes_samples_and_shards_experts(tmp_path, data_dir):
  """Through the loop: 4 steps and a bitwise resume from step 2; the same 4 steps with the
  4 experts over 4 of 8 devices (`--config.mesh.expert=4`, the batch over all 8) give the
  1-device losses (to float rounding: the per-device batch changes XLA's CPU kernels, and
  8-device data parallelism differs from 1 device in the same last bits); the sampler
  prints the same text on 1 and 8 devices."""
  spec = 'moe_pydoc.py:variant=tiny'
  straight = lm_checks.check_trains_and_resumes(spec, tmp_path, data_dir)
  record = read_metrics(tmp_path / 'straight')[4]
  assert 0 <= record['moe_dropped'] < 1 and record['aux_loss'] > 0
  assert record['expert_load_max'] >= 0.25 >= record['expert_load_min']
  eight = run_cli(['--config', f'configs/{spec}', '--workdir', tmp_path / 'eight',
                   '--config.mesh.expert=4', *(f'--config.{k}' for k in lm_checks.TEST_RUN),
                   '--config.eval_every=0'], data_dir, devices=8)
  assert eight.returncode == 0, eight.stderr[-2000:]
  np.testing.assert_allclose([r['loss'] for _, r in sorted(read_metrics(tmp_path / 'eight')
                                                           .items())],
                             [loss for _, loss in straight], rtol=1e-6)
  lm_checks.check_sampler_one_and_eight(spec, tmp_path / 'straight', data_dir)


def test_switch_transformer_trains_on_the_denoising_task(tmp_path, data_dir):
  from train import loop
  from conftest import load_config
  config = load_config('bart_pydoc.py:variant=tiny', total_steps=1, log_every=1,
                       eval_every=0, ckpt_every=0, data__data_dir=data_dir)
  config.model_name = 'sequence.t5'
  config.model = dict(t5.TINY, num_encoder_layers=1, num_decoder_layers=1, sparse_step=1,
                      moe=dict(num_experts=4, top_k=1, normalize_gates=False))
  loop.train_and_evaluate(config, str(tmp_path))
  record = read_metrics(tmp_path)[1]
  assert np.isfinite(record['loss']) and record['aux_loss'] > 0
  assert sum(record[f'expert_load_{e}'] for e in range(4)) == pytest.approx(1.0, rel=1e-5)


def test_expert_parallel_step_moves_tokens_by_all_to_all(data_dir):
  hlo = subprocess.run([sys.executable, '-c', HLO_SCRIPT], cwd=REPO, capture_output=True,
                       text=True, env=cli_env(data_dir, 8), timeout=300)
  assert hlo.returncode == 0, hlo.stderr[-2000:]
  assert hlo.stdout.split() == ['expert-sharded', 'all-to-all']


# The MoE layer's training step (forward and gradients) compiled over a mesh of 8 devices
# with the experts over `expert` = 4: its weights split over that axis, tokens moved by
# all-to-all.
HLO_SCRIPT = """
import flax.linen as nn, jax, jax.numpy as jnp
from arch.layers import moe
from train import config_lib, mesh as mesh_lib
config = config_lib.base()
config.mesh.expert = 4
mesh = mesh_lib.make_mesh(config)
layer = moe.MoE(num_experts=4, expert_dim=8, top_k=2)
x = jax.ShapeDtypeStruct((8, 16, 32), jnp.float32, sharding=mesh_lib.batch_sharding(mesh))
boxed = jax.eval_shape(layer.init, jax.random.key(0), x)
shardings = mesh_lib.logical_shardings(boxed, mesh, config)
params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      nn.meta.unbox(boxed), shardings)
with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.rules(config)):
  loss = lambda v, x: jnp.sum(layer.apply(v, x) ** 2)
  text = jax.jit(jax.grad(loss)).lower(params, x).compile().as_text()
if shardings['params']['wi'].spec[0] == 'expert':
  print('expert-sharded')
if 'all-to-all' in text:
  print('all-to-all')
"""
