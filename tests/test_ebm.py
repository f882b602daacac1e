"""Energy-based models: Langevin's stationary law, the persistent chains as loop state
(jit and pmap), NCE's noise density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import load_config, run_cli

from arch.generative import ebm


def test_langevin_samples_a_gaussian_energy():
  # E(x) = |x|^2 / (2 s^2): N(0, s^2 I). The unadjusted algorithm with step a and noise
  # sqrt(2a) has the stationary variance s^2 / (1 - a / (2 s^2)) per coordinate.
  s2, a = 0.09, 0.002
  keys = jax.random.split(jax.random.key(0), 512)
  x0 = jnp.full((512, 4, 4, 1), 0.9)
  x = jax.jit(lambda x: ebm.langevin(lambda v: (v ** 2).sum((1, 2, 3)) / (2 * s2), x, keys,
                                     3000, a, np.sqrt(2 * a)))(x0)
  want = s2 / (1 - a / (2 * s2))
  assert abs(float(x.mean())) < 0.01
  assert float(x.var()) == pytest.approx(want, rel=0.03)


def _state(spec, **overrides):
  import flax.linen as nn
  from train import core
  from train import steps as steps_lib
  config = load_config(spec, **overrides)
  task = core.load_task(config)
  tx, schedule = core.make_tx(config, task)
  state = jax.jit(lambda r: nn.meta.unbox(core.make_init_fn(config, task, tx)(r)))(
      jax.random.key(0))
  return config, task, state, jax.jit(steps_lib.make_train_step(config, task, tx, schedule))


def _batch(n):
  return {'image': jax.random.randint(jax.random.key(1), (n, 8, 8, 1), 0, 256).astype(jnp.uint8),
          'label': jnp.zeros((n,), jnp.int32)}


def test_persistent_chains_continue_the_next_rows_of_the_buffer():
  config, task, state, step = _state('ebm_digits.py:tiny')
  b, n = config.batch_size, config.task_kwargs.buffer_size  # 8 of 16 rows per step
  buffers = [np.asarray(state.extra['chains']['buffer'])]
  for _ in range(3):
    state, _ = step(state, _batch(b))
    buffers.append(np.asarray(state.extra['chains']['buffer']))
  assert int(state.extra['chains']['cursor']) == (3 * b) % n
  for i in range(3):  # step i rewrote rows [i b, (i + 1) b) mod n and no others
    rows = (np.arange(b) + i * b) % n
    others = np.setdiff1d(np.arange(n), rows)
    assert (buffers[i + 1][rows] != buffers[i][rows]).any(axis=(1, 2, 3)).all()
    np.testing.assert_array_equal(buffers[i + 1][others], buffers[i][others])
  assert np.abs(buffers[-1]).max() <= 1.0


def test_cd_trains_under_pmap(tmp_path, data_dir):
  from train import checkpoint
  args = ['--config', 'configs/ebm_digits.py:tiny', '--workdir', tmp_path,
          '--config.parallelism=pmap', '--config.total_steps=2', '--config.eval_every=2',
          '--config.ckpt_every=1', '--config.log_every=1', '--config.batch_size=8']
  proc = run_cli(args, data_dir, devices=2)
  assert proc.returncode == 0, proc.stderr
  config, task, abstract, _ = _state('ebm_digits.py:tiny')
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  state = ckpt.restore(1, abstract)[0]
  # A second step runs (the averaged chains' int32 cursor stays int32, so the compiled
  # step accepts the state it returned) and sweeps the cursor round the 16-row buffer.
  second = ckpt.restore(2, abstract)[0]
  ckpt.close()
  assert second.extra['chains']['cursor'].dtype == np.int32
  assert int(second.extra['chains']['cursor']) == 0
  # Both replicas' chains (rows 0-3 and 4-7) were written back: the saved replica's buffer
  # differs from the initial one in all 8 rows and in no other.
  changed = (np.asarray(state.extra['chains']['buffer'])
             != np.asarray(abstract.extra['chains']['buffer'])).any(axis=(1, 2, 3))
  np.testing.assert_array_equal(changed, np.arange(16) < 8)
  assert int(state.extra['chains']['cursor']) == 8



def test_nce_under_pmap_fits_its_noise_to_the_global_batch(tmp_path, data_dir):
  """A batch of 8 on 8 devices leaves one row per replica, whose covariance alone is NaN
  (the step used to stop at step 1); the replicas fit q to all 8 rows, as jit does."""
  from train import checkpoint
  noise = {}
  for mode, devices in (('jit', 1), ('pmap', 8)):
    workdir = tmp_path / mode
    proc = run_cli(['--config', 'configs/ebm_digits.py:method=nce,tiny', '--workdir', workdir,
                    f'--config.parallelism={mode}', '--config.total_steps=1',
                    '--config.eval_every=0', '--config.ckpt_every=1', '--config.log_every=1',
                    '--config.batch_size=8', '--config.task_kwargs.data_noise=0.0'],
                   data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, abstract, _ = _state('ebm_digits.py:method=nce,tiny')
    ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
    noise[mode] = ckpt.restore(1, abstract)[0].extra['noise']
    ckpt.close()
    assert bool(noise[mode]['ready'])
  for key in ('mean', 'chol'):
    np.testing.assert_allclose(noise['pmap'][key], noise['jit'][key], rtol=1e-4, atol=1e-5)

def test_nce_noise_density_and_fit():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(5, 5))
  cov = a @ a.T + np.eye(5)
  mean = rng.normal(size=5)
  x = rng.normal(size=(7, 5))
  got = ebm.gaussian_logpdf(jnp.asarray(x), jnp.asarray(mean), jnp.linalg.cholesky(cov))
  np.testing.assert_allclose(got, scipy.stats.multivariate_normal(mean, cov).logpdf(x),
                             rtol=1e-5)
  config, task, state, step = _state('ebm_digits.py:tiny,method=nce')
  first, _ = step(state, _batch(8))
  second, _ = step(first, {**_batch(8), 'image': 255 - _batch(8)['image']})
  assert bool(first.extra['noise']['ready'])
  np.testing.assert_array_equal(first.extra['noise']['mean'], second.extra['noise']['mean'])
  x = _batch(8)['image'].reshape(8, -1) / 127.5 - 1
  np.testing.assert_allclose(first.extra['noise']['mean'], x.mean(0), atol=0.01)
  assert 'log_z' in state.params
