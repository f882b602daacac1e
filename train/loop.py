"""The one training loop: `train_and_evaluate(config, workdir)`.

It reads top to bottom: prepare the runs this one reads (frozen networks, an evaluator's
classifier), build the `Run` (task, runner, input, checkpoint: restored or initialised),
then step, log, evaluate and save on their schedules until `total_steps`, or until a
signal asks it to stop after a save. Everything a step computes lives in train/steps.py;
how it is placed on devices in train/runner.py.

Ordering matters in a few places; the comments say why.
"""

import functools
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from train import checkpoint as ckpt_lib
from train import core
from train import data as data_lib
from train import evaluators as evaluators_lib
from train import mesh as mesh_lib
from train import metrics as metrics_lib
from train import peers
from train.errors import UserError
from train.runner import Runner


class NonFiniteError(UserError):
  pass


class Preempted(Exception):
  def __init__(self, message, exit_code):
    super().__init__(message)
    self.exit_code = exit_code


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns the last
  eval metrics. Raises UserError for bad input; `Preempted` after a save on a signal."""
  if config.get('summary_only'):
    raise UserError(f'this config is a published size, for `python -m train.summary` only: '
                    f'{config.summary_only}')
  mesh_lib.maybe_initialize_distributed(config)
  prepare_runs(config, workdir)
  outer = peers.set_workdir(workdir)  # a lost process is reported with this run's checkpoint
  run = Run(config, workdir)
  total = config.total_steps
  try:
    with _Preemption() as preempt:
      for step in range(run.start, total):
        run.train_step(step)
        done = step + 1
        if _due(done, config.log_every, total):
          run.log(done)
        if config.eval_every and _due(done, config.eval_every, total):
          run.evaluate(done)
        if _due(done, config.ckpt_every, total):
          run.save(done)
        if preempt.reached(done):
          run.stop(done, preempt.signum or signal.SIGTERM)
  finally:
    run.close()
    peers.set_workdir(outer)
  return run.last_eval


def _due(done, every, total):
  return bool(every and done % every == 0) or done == total


def prepare_runs(config, workdir):
  """Trains, before this run starts, every run it reads that holds no checkpoint yet: on a
  fresh start its `config.frozen` runs (in WORKDIR/frozen_NAME unless the entry names a
  workdir; a resumed run has their variables in its own checkpoint), and the runs its
  evaluators read (the FD classifier). Every process takes part (collectives)."""
  core.resolve_frozen(config)
  runs = []
  if _latest_step(workdir) is None:
    runs += [(f'frozen {name!r}', entry.config, core.frozen_workdir(config, name, workdir),
              entry.get('spec') or 'its config')
             for name, entry in (config.get('frozen') or {}).items()]
  runs += evaluators_lib.runs(config)
  for label, sub, sub_dir, spec in runs:
    if _latest_step(sub_dir) is None:
      core.log(f'{label}: no checkpoint in {sub_dir}; training {spec} there first')
      train_and_evaluate(sub, sub_dir)


def _latest_step(workdir):
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


class Run:
  """One training run's moving parts and the host-side bookkeeping between steps."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, workdir
    self.mesh = mesh_lib.make_mesh(config)
    mesh_lib.check_batch(config, self.mesh)
    self.task = core.load_task(config)
    self.runner = Runner(config, self.task, self.mesh, evaluators_lib.label_key(config))
    self.evals = evaluators_lib.build(config, self.task)
    self.pidx, self.pcount = jax.process_index(), jax.process_count()
    self.input = self._train_input()
    self.ckpt = ckpt_lib.Checkpointer(workdir, keep=config.get('keep_ckpts', 3),
                                      async_save=config.get('async_checkpoints', True))
    self.start = self.ckpt.latest_step()
    self.last_good = self.start
    if self.start is not None:
      self.state = self._restore(self.start)
    else:
      self.start, self.state = 0, self._fresh_state()
    metrics_lib.write_config_json(workdir, config)
    self.writer = metrics_lib.Writer(workdir, config.total_steps, self.start)
    self.pending, self.last_eval, self._samplers, self._embedded = [], {}, {}, {}
    self.flops = self.peak = None
    self.t_log, self.steps_since = time.time(), 0

  # ----------------------------------------------------------------------- set-up

  def _train_input(self):
    return data_lib.task_train_input(self.config, self.task, self._shards(), self.pidx,
                                     self.pcount, self.workdir)

  def _shards(self):
    return mesh_lib.local_data_parallel_size(self.mesh)

  def _restore(self, step):
    try:
      host_state, data_state = self.ckpt.restore(step, self.runner.abstract_state)
    except UserError:
      self.ckpt.close()
      raise
    self.input.set_state(data_state)
    core.log(f'resumed from {self.ckpt.directory}/{step}')
    return self.runner.from_host(host_state)

  def _fresh_state(self):
    """Initialised params (or another run's, `config.init_from`), with every frozen run's
    variables in its collection."""
    state = self.runner.init(jax.random.key(self.config.seed))
    spec = self.config.get('init_from') or {}
    for name in (self.config.get('frozen') or {}):
      if name not in state.extra and name == spec.get('frozen'):
        continue  # a run read only as init_from's source: no collection of its own
      if name not in state.extra:
        raise UserError(f'config.frozen names {name!r} but the task made no {name!r} '
                        f'collection (it has: {", ".join(state.extra) or "none"})')
      sub_dir = core.frozen_workdir(self.config, name, self.workdir)
      tree, step = core.restore_variables(self.config.frozen[name].config, sub_dir)
      core.log(f'frozen {name!r}: restored step {step} of {sub_dir}')
      if jax.tree.structure(tree) != jax.tree.structure(state.extra[name]):
        raise UserError(f'the frozen {name!r} run in {sub_dir} does not match the network '
                        f'its config builds')
      state = self.runner.put_extra(state, name, tree)
    if spec.get('frozen') and not spec.get('workdir'):
      if spec.frozen not in (self.config.get('frozen') or {}):
        raise UserError(f'config.init_from.frozen={spec.frozen!r} names no config.frozen run '
                        f'(there are: {", ".join(self.config.get("frozen") or {}) or "none"})')
      spec.workdir = core.frozen_workdir(self.config, spec.frozen, self.workdir)
    if spec.get('workdir'):
      params, extra, report = core.init_from(self.config, *self.runner.host_variables(state))
      core.log(report)
      state = self.runner.put_variables(state, params, extra)
    return state

  # ------------------------------------------------------------------------ steps

  def train_step(self, step):
    batch = self.runner.device_batch(next(self.input))
    if step == self.start:  # compile once, ahead of time, and measure the step's FLOPs
      self.flops = self.runner.compile(self.state, batch)
      self.peak = metrics_lib.peak_flops_per_device() if self.flops else None
      self.t_log = time.time()
    self.state, metrics = self.runner.step(self.state, batch)
    self.pending.append(metrics)
    self.steps_since += 1

  def _fetch(self, step):
    """Host-side averages of the pending step metrics; stops on a non-finite step."""
    if not self.pending:
      return {}
    host = jax.device_get([self.runner.scalars(m) for m in self.pending])
    first = step - len(self.pending) + 1
    for i, m in enumerate(host):
      if not m['finite']:
        raise NonFiniteError(
            f'loss or gradients became NaN/Inf at step {first + i} '
            f'(loss={float(m["loss"])}, grad_norm={float(m["grad_norm"])}); stopping. '
            + (f'The last good checkpoint is step {self.last_good} in {self.ckpt.directory}.'
               if self.last_good is not None else 'No checkpoint was saved yet.'))
    self.pending = []
    return {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != 'finite'}

  def log(self, step):
    avg = self._fetch(step)
    sps = self.steps_since / max(time.time() - self.t_log, 1e-9)
    avg.update(steps_per_sec=sps, examples_per_sec=sps * self.config.batch_size,
               mfu=(self.flops * sps / self.peak) if self.flops and self.peak else 0.0)
    self.writer.write(step, 'train', avg)
    self.writer.progress(step, avg.get('loss'), sps)
    self.t_log, self.steps_since = time.time(), 0

  def save(self, step, force=False):
    self._fetch(step)  # never keep a state after a bad step
    self.ckpt.save(step, self.runner.to_host(self.state), self.input.get_state(), force=force)
    self.last_good = step

  def stop(self, step, signum):
    """Saves (unless this step was just saved) and raises Preempted."""
    if self.last_good != step:
      self.save(step, force=True)
    self._fetch(step)
    self.ckpt.wait()
    raise Preempted(f'stopped by {signal.Signals(signum).name} after step {step}; checkpoint '
                    f'saved in {self.ckpt.directory}. Rerun the same command to resume.',
                    128 + int(signum))

  def close(self):
    self.ckpt.wait()
    self.ckpt.close()
    if hasattr(self, 'writer'):
      self.writer.close()

  # ------------------------------------------------------------------ evaluation

  def evaluate(self, step):
    """The task's metrics over the eval split (`evaluate`), its run-level metrics
    (`evaluate_run`) and the named evaluators', written as one eval line."""
    self._fetch(step)  # never evaluate a state after a bad step
    result = {}
    if self.runner.has_eval:
      result.update(self._split_metrics())
    if self.task.evaluate_run is not None:
      rng = jax.random.fold_in(jax.random.key(self.config.seed), step)
      result.update(self.runner.evaluate_run(self.state, rng, core.uses_ema(self.config)))
    self._embedded = {}
    for evaluator in self.evals:
      result.update(evaluator(self, step))
    if result:
      self.writer.write(step, 'eval', result)
    self.last_eval = result
    self.t_log = time.time()

  def eval_batches(self, split):
    return data_lib.eval_batches(self.config, split, self.task.preprocess, self.pidx,
                                 self.pcount, self.workdir,
                                 **data_lib.collation(self.task, self._shards()))

  def _split_metrics(self):
    sums, count = None, 0.0
    batches = self.eval_batches(self.config.data.eval_split)
    for i in range(len(batches)):
      s, c = self.runner.eval_sums(self.state, self.runner.device_batch(batches[i]))
      sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
      count += c
    sums, count = jax.device_get((sums, count))
    if self.task.finalize_eval is not None:
      return {k: float(v) for k, v in self.task.finalize_eval(sums, float(count)).items()}
    return {k: float(v) / float(count) for k, v in sums.items()}

  def embed_split(self, split, max_examples=0):
    """(features, labels) of the real rows of `split` (at most about `max_examples`, 0 =
    all) under the current (EMA) params, as host numpy arrays (the probe evaluators)."""
    if (split, max_examples) not in self._embedded:  # the probes share one embedding
      batches = self.eval_batches(split)
      size = self.config.get('eval_batch_size') or self.config.batch_size
      n = min(len(batches), -(-max_examples // size)) if max_examples else len(batches)
      feats, labels = [], []
      for i in range(n):
        f, y, valid = self.runner.features(self.state, self.runner.device_batch(batches[i]))
        feats.append(f[valid > 0])
        labels.append(y[valid > 0])
      self._embedded[split, max_examples] = np.concatenate(feats), np.concatenate(labels)
    return self._embedded[split, max_examples]

  def generate(self, n, **options):
    """n samples {'images': (n, ...), ...} (host numpy) from the current (EMA) params,
    sample i drawn with row id i and the config's seed, as `train.sample` draws them."""
    key = tuple(sorted(options.items()))
    if key not in self._samplers:
      self._samplers[key] = jax.jit(functools.partial(self.task.sample, **options))
    variables = self.runner.variables(self.state, core.uses_ema(self.config))
    return core.run_batch(self._samplers[key], variables, self.task.prompt_batch(None, n),
                          list(range(n)), self.mesh, mesh_lib.rules(self.config),
                          self.config.seed)


class _Preemption:
  """Catches SIGTERM/SIGINT so the loop can save before exiting (single-process).

  With several processes, orbax's preemption sync point (jax's own SIGTERM notice, set up
  by `jax.distributed.initialize`) makes every host stop at the same step instead.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    if jax.process_count() == 1:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def reached(self, step) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signum is not None

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
