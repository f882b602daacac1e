"""Pruning as masks in the loop (arch/compress/prune.py): the global threshold and channel
criterion against numpy rankings, the gradual and lottery schedules against their formulas,
pruned weights staying exactly zero under AdamW (momentum, weight decay) and through a
checkpoint and exact resume, lottery rewinding, and both configs through the loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from arch.compress import prune
from conftest import (check_eight_devices, check_resumes_alike, load_config, read_metrics,
                      train_spec)


def _tree(rng, shapes, scales):
  return {f'l{i}': {'kernel': (rng.randn(*s) * c).astype(np.float32), 'bias': np.ones(s[-1:])}
          for i, (s, c) in enumerate(zip(shapes, scales))}


def test_prunable_leaves_are_the_kernels():
  params = {'dense': {'kernel': np.ones((3, 4)), 'bias': np.ones(4)},
            'attn': {'query': {'kernel': np.ones((4, 2, 2))}}, 'norm': {'scale': np.ones(4)},
            'embed': {'embedding': np.ones((9, 4))}, 'conv': {'kernel': np.ones((3, 3, 2, 5))}}
  got = set(traverse_util.flatten_dict(prune.init_masks(params)))
  assert got == {('dense', 'kernel'), ('attn', 'query', 'kernel'), ('conv', 'kernel')}
  assert set(traverse_util.flatten_dict(prune.init_masks(params, prune.is_conv))) == {
      ('conv', 'kernel')}


@pytest.mark.parametrize('fraction', [0.0, 0.37, 0.5, 0.9])
def test_global_threshold_prunes_the_smallest_magnitudes_to_the_requested_count(fraction):
  rng = np.random.RandomState(0)
  # leaves of very different scales: one global threshold prunes the small layer first
  params = _tree(rng, [(5, 7), (3, 3, 2, 4), (11, 3)], [0.01, 1.0, 3.0])
  masks = prune.init_masks(params)
  # some weights already pruned: they count as the smallest and stay pruned
  masks['l1']['kernel'] = masks['l1']['kernel'].at[0, 0, 0, 0].set(0.0)
  new = prune.global_masks(params, masks, fraction)
  keys = sorted(traverse_util.flatten_dict(masks))
  flat_p, flat_m = traverse_util.flatten_dict(params), traverse_util.flatten_dict(new)
  mags = np.concatenate([np.abs(flat_p[k] * np.asarray(traverse_util.flatten_dict(masks)[k]))
                         .ravel() for k in keys])
  keep = np.concatenate([np.asarray(flat_m[k]).ravel() for k in keys])
  n = mags.size
  assert set(np.unique(keep)) <= {0.0, 1.0}
  assert (keep == 0).sum() == round(fraction * n)  # exactly, to one weight
  if 0 < fraction:
    assert mags[keep == 0].max() <= mags[keep == 1].min()
    # the pruned ones are exactly numpy's smallest round(f n) magnitudes
    np.testing.assert_array_equal(np.sort(mags[keep == 0]), np.sort(mags)[:round(fraction * n)])
    assert float(new['l1']['kernel'][0, 0, 0, 0]) == 0.0
  # the small-scale layer goes first
  if fraction == 0.37:
    kept = [float(new[k]['kernel'].mean()) for k in ('l0', 'l1', 'l2')]
    assert kept[0] == 0.0 and kept[1] < kept[2], kept
  # the sparsity read back from the masked params
  masked = prune.apply_masks(params, new)
  assert float(prune.sparsity(masked, new)) == pytest.approx(round(fraction * n) / n)


def test_channel_pruning_zeros_whole_output_channels_of_smallest_l1_norm():
  rng = np.random.RandomState(1)
  params = {'a': {'kernel': rng.randn(3, 3, 4, 10).astype(np.float32),
                  'bias': rng.randn(10).astype(np.float32)},
            'b': {'kernel': rng.randn(1, 1, 10, 6).astype(np.float32)}}
  params['a']['kernel'][..., 3] *= 5.0  # a large channel never goes
  masks = prune.init_masks(params, prune.is_conv)
  new = prune.channel_masks(params, masks, 0.5)
  for name, c in (('a', 10), ('b', 6)):
    m = np.asarray(new[name]['kernel'])
    per_channel = m.reshape(-1, c)
    assert (per_channel == per_channel[:1]).all()  # whole channels, nothing partial
    pruned = np.flatnonzero(per_channel[0] == 0)
    assert len(pruned) == round(0.5 * c)
    l1 = np.abs(params[name]['kernel']).reshape(-1, c).sum(0)
    np.testing.assert_array_equal(np.sort(pruned), np.sort(np.argsort(l1)[:round(0.5 * c)]))
  assert 3 not in np.flatnonzero(np.asarray(new['a']['kernel'])[0, 0, 0] == 0)
  # the task also masks the pruned channels' biases
  opts = prune.Options(base_task='x', method='channel')
  out = prune.mask_params(opts, params, new)
  gone = np.asarray(new['a']['kernel'])[0, 0, 0] == 0
  assert (np.asarray(out['a']['bias'])[gone] == 0).all()
  np.testing.assert_array_equal(np.asarray(out['a']['bias'])[~gone], params['a']['bias'][~gone])


def test_gradual_schedule_equals_zhu_and_gupta():
  sf, t0, t1 = 0.8, 10, 50
  for t in (0, 10, 11, 20, 30, 49, 50, 80):
    frac = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
    want = sf * (1 - (1 - frac) ** 3)
    assert float(prune.gradual_sparsity(t, sf, t0, t1)) == pytest.approx(want, abs=1e-6)
  opts = prune.Options(base_task='x', sparsity=sf, begin_step=t0, end_step=t1, every=15)
  now = [t for t in range(70) if bool(prune.prune_now(opts, jnp.int32(t))[0])]
  assert now == [10, 25, 40, 50]  # every 15 steps in the window, and its end
  # lottery: p of the remaining weights per round, s_f after the last
  lot = prune.Options(base_task='x', method='lottery', sparsity=0.875, rounds=3,
                      round_steps=5, rewind_step=2)
  events = [(t, float(prune.prune_now(lot, jnp.int32(t))[1])) for t in range(25)
            if bool(prune.prune_now(lot, jnp.int32(t))[0])]
  assert [t for t, _ in events] == [7, 12, 17]
  np.testing.assert_allclose([s for _, s in events], [0.5, 0.75, 0.875], rtol=1e-6)


# ------------------------------------------------------------- the step, in process


def _state_and_step(spec, **overrides):
  from train import core, steps
  config = load_config(spec, **overrides)
  task = core.load_task(config)
  tx, schedule = core.make_tx(config, task)
  state = nn.meta.unbox(core.make_init_fn(config, task, tx)(jax.random.key(0)))
  step = jax.jit(steps.make_train_step(config, task, tx, schedule))
  rng = np.random.RandomState(0)
  shapes = task.example_batch(16)
  batch = {'image': rng.randint(0, 256, shapes['image'].shape).astype(np.uint8),
           'label': rng.randint(0, 10, shapes['label'].shape).astype(np.int32)}
  return config, task, tx, state, step, batch


def _kernels(tree):
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()
          if k[-1] == 'kernel'}


def test_pruned_weights_stay_exactly_zero_under_adamw_momentum_and_decay():
  _, _, _, state, step, batch = _state_and_step(
      'prune_resnet_digits.py:tiny,sparsity=0.6', task_kwargs__end_step=3,
      task_kwargs__every=1, lr=0.01, optax__weight_decay=0.1, schedule='constant')
  n_pruned, moved = [], False
  first = _kernels(state.extra['dense']['params'])
  for t in range(7):
    state, metrics = step(state, batch)
    masks = _kernels(state.extra['prune']['mask'])
    params = _kernels(state.params)
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    for k, m in masks.items():
      assert (params[k][m == 0] == 0).all(), (t, k)  # exactly zero
      moved |= bool((params[k][m == 1] != first[k][m == 1]).any())
    want = round(float(prune.gradual_sparsity(min(t, 3), 0.6, 0, 3)) * total)
    assert zeros == want, (t, zeros, want)
    assert float(metrics['sparsity']) == pytest.approx(zeros / total)
    n_pruned.append(zeros)
  assert moved and n_pruned[-1] == round(0.6 * total)
  # Adam's first moment is not zero at pruned weights (momentum from before they were
  # pruned, weight decay): without the mask after each update they would move.
  mu = _kernels(state.opt_state[0].mu)
  assert any((mu[k][m == 0] != 0).any() for k, m in masks.items())


def test_lottery_rewinds_survivors_to_the_kept_early_values():
  config, _, tx, state, step, batch = _state_and_step(
      'prune_resnet_digits.py:tiny,method=lottery,sparsity=0.5', task_kwargs__rounds=2,
      task_kwargs__round_steps=2, task_kwargs__rewind_step=1, lr=0.01)
  opts = prune.Options(**config.task_kwargs.to_dict())
  kept = None
  for t in range(6):
    if t == 1:
      kept = jax.tree.map(np.asarray, state.params)  # the params after one update
    before, masks, target = prune.before_update(opts, state, tx)
    if t == 1:
      np.testing.assert_array_equal(
          traverse_util.flatten_dict(before.extra['prune']['rewind'])[('head', 'kernel')],
          kept['head']['kernel'])
    if t in (3, 5):  # the end of each round: pruned, survivors rewound, optimizer restarted
      assert any((np.asarray(a) != b).any()  # training had moved them off the kept values
                 for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(kept)))
      assert float(target) == pytest.approx(1 - 0.5 ** ((t - 1) / 4))
      want = prune.apply_masks(kept, masks)
      for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
      assert int(before.opt_state[0].count) == 0
      m = _kernels(masks)
      frac = sum(int((v == 0).sum()) for v in m.values()) / sum(v.size for v in m.values())
      assert frac == pytest.approx(float(target), abs=1e-3)
    else:
      for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    state, _ = step(state, batch)


# --------------------------------------------------------------------- through the loop

TINY_RUN = dict(total_steps=4, ckpt_every=2, log_every=1, eval_every=4, batch_size=8)


@pytest.fixture(scope='module')
def dense_digits(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp('dense_digits')
  result = train_spec('resnet_digits.py:tiny', workdir, data_dir, total_steps=6,
                      eval_every=6, ckpt_every=6, log_every=6, batch_size=32)
  return str(workdir), result


def _check_loop(spec, tmp_path, data_dir, dense_workdir, dense_eval, **kwargs):
  overrides = dict(frozen__dense__workdir=dense_workdir, task_kwargs__end_step=3,
                   task_kwargs__every=1, batch_size=8, **kwargs)
  train = lambda workdir, **kw: train_spec(
      spec, workdir, data_dir, **{**TINY_RUN, **overrides, **kw})
  result = train(tmp_path / 'straight')
  straight, _, states = check_resumes_alike(spec, train, tmp_path,
                                            must_have=('loss', 'sparsity', 'grad_norm'),
                                            **overrides)
  sparsity = float(load_config(spec).task_kwargs.sparsity)
  assert straight[4]['sparsity'] == pytest.approx(sparsity, abs=0.02)
  assert result['sparsity'] == pytest.approx(straight[4]['sparsity'], abs=1e-6)
  # the eval reports the dense run's metrics, restored exactly
  for k, v in dense_eval.items():
    if not k.startswith(('dense_', 'sparsity')) and isinstance(v, float):
      assert result[f'dense_{k}'] == pytest.approx(v, rel=1e-5), k
  # the checkpointed (and resumed) params are exactly zero where the mask is
  for state in states:
    masks = _kernels(state.extra['prune']['mask'])
    params = _kernels(state.params)
    assert any((m == 0).any() for m in masks.values())
    for k, m in masks.items():
      assert (params[k][m == 0] == 0).all(), k
  return straight, result


def test_digits_config_trains_and_resumes_exactly(tmp_path, data_dir, dense_digits):
  _check_loop('prune_resnet_digits.py:tiny,sparsity=0.8', tmp_path, data_dir, *dense_digits)
  assert read_metrics(tmp_path / 'straight', 'eval')[4]['sparsity'] == pytest.approx(0.8,
                                                                                     abs=0.02)


def test_channel_config_trains_and_resumes_exactly(tmp_path, data_dir, dense_digits):
  _check_loop('prune_resnet_digits.py:tiny,method=channel,sparsity=0.5', tmp_path, data_dir,
              *dense_digits)


def test_gpt_config_trains_and_resumes_exactly(tmp_path, data_dir):
  dense = tmp_path / 'dense'
  dense_eval = train_spec('gpt_pydoc.py:variant=tiny', dense, data_dir, total_steps=2,
                          eval_every=2, ckpt_every=2, log_every=2, batch_size=8)
  _check_loop('prune_gpt_pydoc.py:tiny', tmp_path, data_dir, str(dense), dense_eval)


def test_eight_devices_match_one(tmp_path, dense_digits):
  """Global magnitude pruning of the digits ResNet on 8 simulated devices (jit): the same
  per-step losses and sparsity, and the same eval, as on 1 device."""
  check_eight_devices('prune_resnet_digits.py:tiny,sparsity=0.8', tmp_path, ('jit',),
                      close=('loss',), equal=('sparsity',), evals=('accuracy', 'sparsity'),
                      args=(f'--config.frozen.dense.workdir={dense_digits[0]}',
                            '--config.task_kwargs.end_step=3', '--config.task_kwargs.every=1',
                            '--config.batch_size=16', '--config.log_every=1'))
