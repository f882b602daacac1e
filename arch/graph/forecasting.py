"""Spatio-temporal forecasting: from the last T readings at the N nodes of a fixed graph (the
speeds at road sensors), predict the next H (ST-GCN on the offline `traffic` set).

Config keys read: `model_name`, `model` (a `Model(horizon=...)` mapping (B, T, N, 1)
normalised readings and the graph's senders, receivers and weights to (B, H, N), e.g.
arch/graph/stgcn.py), and `task_kwargs`, the fields of `Options`. Examples are windows:
`history` (T, N) and `target` (H, N) in the readings' units, and the graph they share,
`senders`, `receivers` (E,) int and `weights` (E,) float.

`collate` stacks a shard's G windows and keeps their graph once (every window of a shard
must carry the same one), with `lambda_max`, the largest eigenvalue of its normalised
Laplacian I - D^-1/2 W D^-1/2 (numpy, on the host), which the model takes as
`lambda_max=`; the loop stacks the S shards of a batch on a leading axis and the network
runs on each shard (vmap), so a batch shards over devices by window. Readings are
normalised with the train split's mean and standard deviation (`mean`, `std`); the network
predicts z and the forecast is mean + std * z. The loss is the mean absolute error of z
over the batch's windows, steps and nodes. Evaluation reports, in the readings' units and
averaged over windows and nodes, `mae_<minutes>` for each step of `report_steps` (step s
is s * `step_minutes` ahead), `mae` (their mean), the same for the persistence forecast
(the last reading, `persistence_mae_<minutes>`), and `loss`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.task import ConfigError, Task, parse_options

GRAPH_KEYS = ('senders', 'receivers', 'weights')


@dataclasses.dataclass(frozen=True)
class Options:
  """Forecasting's task_kwargs."""
  num_nodes: int = 0           # N of the examples
  num_edges: int = 0           # E of their (shared) graph, directed
  history: int = 12            # T, readings in a window
  horizon: int = 9             # H, future steps predicted
  report_steps: tuple = (3, 6, 9)  # steps reported as mae_<minutes>
  step_minutes: int = 5        # minutes between readings (names the metrics)
  mean: float = 0.0            # normalisation (the train split's statistics)
  std: float = 1.0


def laplacian_lambda_max(senders, receivers, weights, num_nodes: int) -> np.float32:
  """The largest eigenvalue of L = I - D^-1/2 W D^-1/2 (numpy; W_ij = weight of j -> i)."""
  w = np.zeros((num_nodes, num_nodes))
  np.add.at(w, (receivers, senders), weights)
  degree = w.sum(1)
  inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
  lap = np.eye(num_nodes) - inv_sqrt[:, None] * w * inv_sqrt[None, :]
  return np.float32(np.linalg.eigvalsh(lap)[-1])


def metric_names(opts: Options, prefix: str = 'mae') -> list:
  return [f'{prefix}_{s * opts.step_minutes}' for s in opts.report_steps]


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.num_nodes < 1 or opts.num_edges < 0:
    raise ConfigError(f'task_kwargs.num_nodes={opts.num_nodes}, num_edges={opts.num_edges}: '
                      'set them to the dataset\'s graph')
  if opts.std <= 0:
    raise ConfigError(f'task_kwargs.std={opts.std} must be positive')
  if not opts.report_steps or not all(1 <= s <= opts.horizon for s in opts.report_steps):
    raise ConfigError(f'task_kwargs.report_steps={opts.report_steps} must be steps in '
                      f'1..horizon={opts.horizon}')
  model = arch.model_from_config(config, horizon=opts.horizon)
  report = np.asarray(opts.report_steps) - 1

  def normalise(x):
    return (x.astype(jnp.float32) - opts.mean) / opts.std

  def apply_shard(variables, shard):
    """Normalised forecasts (G, H, N) of one shard's windows."""
    x_GTNC = normalise(shard['history'])[..., None]
    return model.apply(variables, x_GTNC, *(shard[k] for k in GRAPH_KEYS),
                       lambda_max=shard['lambda_max'])

  def predict(variables, batch):
    """Normalised forecasts (S, G, H, N) of S collated shards."""
    return jax.vmap(lambda shard: apply_shard(variables, shard))(batch)

  def loss(variables, batch, rng):
    del rng  # deterministic network
    z = predict(variables, batch)
    err = jnp.abs(z - normalise(batch['target']))
    return err.mean(), ({'mae': opts.std * err.mean()}, {})

  def evaluate(variables, batch):
    z = predict(variables, batch)
    target = batch['target'].astype(jnp.float32)
    abs_err_SGHN = jnp.abs(opts.mean + opts.std * z - target)
    last_SGN = batch['history'][:, :, -1].astype(jnp.float32)
    persistence_SGHN = jnp.abs(last_SGN[:, :, None] - target)
    out = {'loss': jnp.abs(z - normalise(target)).mean((-2, -1))}
    per_step = abs_err_SGHN[:, :, report].mean(-1)  # (S, G, steps)
    for i, name in enumerate(metric_names(opts)):
      out[name] = per_step[..., i]
    out['mae'] = per_step.mean(-1)
    base = persistence_SGHN[:, :, report].mean(-1)
    for i, name in enumerate(metric_names(opts, 'persistence_mae')):
      out[name] = base[..., i]
    return out

  def collate(windows):
    first = windows[0]
    for w in windows[1:]:
      if not all(np.array_equal(w[k], first[k]) for k in GRAPH_KEYS):
        raise ValueError('the windows of one batch must share their graph')
    batch = {k: np.stack([np.asarray(w[k]) for w in windows]) for k in ('history', 'target')}
    batch.update({k: np.asarray(first[k]) for k in GRAPH_KEYS})
    batch['lambda_max'] = laplacian_lambda_max(*(batch[k] for k in GRAPH_KEYS),
                                               batch['history'].shape[-1])
    return batch

  def example_batch(batch_size):
    shape = lambda *s: (1,) + s  # one shard
    n, e = opts.num_nodes, opts.num_edges
    return {'history': jax.ShapeDtypeStruct(shape(batch_size, opts.history, n), jnp.float32),
            'target': jax.ShapeDtypeStruct(shape(batch_size, opts.horizon, n), jnp.float32),
            'senders': jax.ShapeDtypeStruct(shape(e), jnp.int32),
            'receivers': jax.ShapeDtypeStruct(shape(e), jnp.int32),
            'weights': jax.ShapeDtypeStruct(shape(e), jnp.float32),
            'lambda_max': jax.ShapeDtypeStruct(shape(), jnp.float32)}

  def init(rng, batch):
    shard = jax.tree.map(lambda x: x[0], batch)
    x_GTNC = normalise(shard['history'])[..., None]
    return model.init({'params': rng}, x_GTNC, *(shard[k] for k in GRAPH_KEYS),
                      lambda_max=shard['lambda_max'])

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              collate=collate)
