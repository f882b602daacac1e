"""The runner: places the state and batches on devices and runs the compiled steps.

One class for both modes; they differ only in how a pure function of (state, batch) is
compiled and where its arrays live:

- `parallelism='jit'`: one SPMD program over a `jax.sharding.Mesh`. The state is placed by
  the logical-axis rules of the config, the global batch sharded along the data axes; XLA
  inserts the gradient all-reduce.
- `parallelism='pmap'`: the same step under `jax.pmap`; the state is replicated with a
  leading device axis, each process's batch split over its devices, and the step builders
  average gradients, metrics and non-param variables over the device axis explicitly.
"""

import contextlib
import os

import flax.linen as nn
import jax
import numpy as np

from arch.task import PMAP_AXIS
from train import core
from train import flops as flops_lib
from train import mesh as mesh_lib
from train import steps
from train.errors import UserError

MODES = ('jit', 'pmap')
# XLA options of the state's initialisation, which runs once (see `Runner.init`): LLVM's -O1,
# unless XLA_FLAGS chose a backend level itself (the test suite's 0, which compiles the
# state's init 1.5x faster again: ddpm_digits' tiny one 15.0 s -> 10.2 s, loaded).
INIT_COMPILER_OPTIONS = ({} if '--xla_backend_optimization_level='
                         in os.environ.get('XLA_FLAGS', '') else {'xla_backend_optimization_level': 1})
# States up to this size initialise on one device and are then placed (Runner.init).
SMALL_STATE_BYTES = 256 * 2**20


def one_device_mesh(mesh):
  """`mesh`'s axes, each of size 1, on the first device: what a 1-device run's mesh is."""
  names = tuple(mesh.axis_names)
  return jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape((1,) * len(names)), names,
                           axis_types=(jax.sharding.AxisType.Auto,) * len(names))


class Runner:
  """Compiled steps of one config over its devices, in the config's parallelism mode."""

  def __init__(self, config, task, mesh, label_key='label'):
    mode = config.parallelism
    if mode not in MODES:
      raise UserError(f"unknown parallelism {mode!r}; valid: 'jit', 'pmap'")
    self.pmap = mode == 'pmap'
    self.mesh, self.rules = mesh, mesh_lib.rules(config)
    self.n = jax.local_device_count()
    if self.pmap and (config.batch_size // jax.process_count()) % self.n:
      raise UserError(f'batch_size={config.batch_size} does not split over {self.n} local '
                      f'devices per process')
    axis = PMAP_AXIS if self.pmap else None
    self.tx, self.schedule = core.make_tx(config, task)
    init = core.make_init_fn(config, task, self.tx)
    with self._context():
      boxed = jax.eval_shape(init, jax.random.key(0))
    abstract = nn.meta.unbox(boxed)
    self.batch_sharding = mesh_lib.batch_sharding(mesh)
    self.replicated = mesh_lib.replicated(mesh)
    if self.pmap:
      self.state_sharding = None
      self.abstract_state = abstract
    else:
      self.state_sharding = mesh_lib.logical_shardings(boxed, mesh, config)
      self.abstract_state = jax.tree.map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
          self.state_sharding)
    # A small state initialises on one device and is then placed on the mesh: the init
    # program is then the one a 1-device run compiles, whatever the mesh or mode, so a
    # persistent compilation cache serves every mesh of a config from one compile (the
    # values are the same: threefry's bits do not depend on the sharding).
    self._init_mesh, init_shardings = self.mesh, self.state_sharding
    if self.pmap:
      self._init_mesh = None if jax.process_count() > 1 else one_device_mesh(mesh)
    nbytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract))
    if self._init_mesh is not None and self._init_mesh.size > 1 and (
        jax.process_count() == 1 and nbytes <= SMALL_STATE_BYTES):
      self._init_mesh = one_device_mesh(mesh)
    if self._init_mesh is not None and self._init_mesh is not self.mesh:
      init_shardings = mesh_lib.logical_shardings(boxed, self._init_mesh, config)
    self._init = jax.jit(lambda rng: nn.meta.unbox(init(rng)), out_shardings=init_shardings)
    use_ema = core.uses_ema(config)
    self._train_fn = steps.make_train_step(config, task, self.tx, self.schedule, axis)
    self._train = self._compile(self._train_fn, returns_state=True)
    self._eval = self._features = self._run_eval = None
    if task.evaluate is not None:
      self._eval = self._compile(steps.make_eval_step(task, use_ema, axis))
    if task.features is not None:
      self._features = self._compile(steps.make_features_step(task, use_ema, label_key))
    if task.evaluate_run is not None:
      self._run_eval = jax.jit(lambda variables, rng: task.evaluate_run(variables, rng),
                               out_shardings=self.replicated)
    self._compiled = self._train

  # -------------------------------------------------------------------------- compile

  def _context(self, mesh=None):
    """The mesh (the run's, or `mesh`) and logical-axis rules that jit traces and runs
    under (pmap needs none)."""
    stack = contextlib.ExitStack()
    mesh = mesh if mesh is not None else None if self.pmap else self.mesh
    if mesh is not None:
      stack.enter_context(jax.set_mesh(mesh))
      stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def _compile(self, fn, returns_state=False):
    """`fn(state, batch)` compiled for this mode; a training step donates its state."""
    donate = (0,) if returns_state else ()
    if self.pmap:
      return jax.pmap(fn, axis_name=PMAP_AXIS, donate_argnums=donate)
    out = (self.state_sharding, self.replicated) if returns_state else self.replicated
    return jax.jit(fn, in_shardings=(self.state_sharding, self.batch_sharding),
                   out_shardings=out, donate_argnums=donate)

  def lower(self, state, batch):
    """The training step lowered for these (possibly abstract) state and batch: its
    `.compile()` gives XLA's cost and memory analyses and the compiled program's text."""
    with self._context():
      return self._train.lower(state, batch)

  def compile(self, state, batch):
    """Compiles the training step for these shapes ahead of time (not under pmap over
    several processes, whose AOT executable would expect global arrays while pmap's call
    takes each process's local ones: that step compiles at its first call); returns its
    model FLOPs per device (train/flops.py: matmuls and convolutions of the traced step,
    scans counted once per iteration, which XLA's cost analysis does not), or None for
    a step with neither."""
    if self.pmap:
      if jax.process_count() == 1:
        self._compiled = self.lower(state, batch).compile()
      local = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), (state, batch))
      return float(flops_lib.function_flops(self._train_fn, *local,
                                            axis_env=[(PMAP_AXIS, jax.device_count())])) or None
    with self._context():
      traced = self._train.trace(state, batch)
      self._compiled = traced.lower().compile()
    return flops_lib.traced_flops(traced) / jax.device_count() or None

  # ------------------------------------------------------------------------ placement

  def _replicate(self, tree):
    """Host values -> arrays with a leading local-device axis (pmap shards it)."""
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (self.n, *np.shape(x))), tree)

  def _first(self, tree):
    return jax.tree.map(lambda x: x[0], tree) if self.pmap else tree

  def init(self, rng):
    with self._context(self._init_mesh):
      # Compiled at LLVM's -O1: the same values bit for bit (threefry is integer arithmetic,
      # and -O1 and -O2 differ in speed only; -O0 moves the truncated normals by an ulp),
      # and the one-off program compiles 3-6x faster (LeNet's 22.6 s -> 3.8 s, loaded).
      compiled = self._init.lower(rng).compile(compiler_options=INIT_COMPILER_OPTIONS)
      state = compiled(rng)
    if self.pmap:
      return self._replicate(jax.device_get(state))
    if self._init_mesh is not self.mesh:
      state = jax.device_put(state, self.state_sharding)
    return state

  def from_host(self, host_state):
    """A restored state (placed as `abstract_state`) as the step takes it."""
    return self._replicate(jax.device_get(host_state)) if self.pmap else host_state

  def to_host(self, state):
    """The state without a device axis, as checkpoints hold it."""
    return jax.device_get(self._first(state)) if self.pmap else state

  def _place(self, tree, shardings):
    """Host arrays placed as the state's leaves `shardings` are (replicated under pmap)."""
    if self.pmap:
      return self._replicate(tree)
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(
        np.shape(x), s, lambda idx, x=x: np.asarray(x)[idx]), tree, shardings)

  def put_extra(self, state, name, tree):
    """`state` with extra[name] replaced by the host arrays `tree`, placed like the state."""
    shardings = None if self.pmap else self.state_sharding.extra[name]
    return state.replace(extra={**state.extra, name: self._place(tree, shardings)})

  def host_variables(self, state):
    """(params, extra) as host numpy arrays, gathered from every process."""
    tree = self._first((state.params, state.extra)) if self.pmap else (state.params, state.extra)
    if jax.process_count() > 1 and not self.pmap:
      from jax.experimental import multihost_utils
      tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))

  def put_variables(self, state, params, extra):
    """`state` with params (and the EMA, if kept) and extra replaced by host arrays."""
    shardings = (None, None) if self.pmap else (self.state_sharding.params,
                                                self.state_sharding.extra)
    params, extra = self._place(params, shardings[0]), self._place(extra, shardings[1])
    ema = None if state.ema_params is None else jax.tree.map(lambda x: x.copy(), params)
    return state.replace(params=params, extra=extra, ema_params=ema)

  def device_batch(self, local_batch):
    """This process's host batch as the step takes it: a global array sharded along the
    data axes (jit), or split over the local devices on a leading axis (pmap)."""
    if self.pmap:
      return {k: v.reshape(self.n, v.shape[0] // self.n, *v.shape[1:])
              for k, v in local_batch.items()}
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local_batch.items()}

  def variables(self, state, use_ema):
    """{'params': ..., other collections} of `state`, laid out for a jit over the mesh
    (the sampler's): under pmap one replica's copy, replicated over the mesh."""
    if self.pmap:
      state = jax.device_put(self.to_host(state), self.replicated)
    return state.variables(use_ema)

  # ---------------------------------------------------------------------------- steps

  def step(self, state, batch):
    return self._compiled(state, batch)

  def compiled_text(self):
    """The compiled training step's HLO text after `compile` (None before it, or where
    the step compiles at its first call: pmap over several processes)."""
    return self._compiled.as_text() if hasattr(self._compiled, 'as_text') else None

  def scalars(self, metrics):
    return self._first(metrics)

  def eval_sums(self, state, batch):
    """(sums of the per-example metrics over the batch's real rows, their count)."""
    with self._context():
      return self._first(self._eval(state, batch))

  def features(self, state, batch):
    """Host (features, labels, real-row mask) of a batch, gathered from every process."""
    with self._context():
      out = jax.device_get(self._features(state, batch))
    if not self.pmap:
      return out
    local = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), out)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      local = multihost_utils.process_allgather(local, tiled=True)
    return local

  def evaluate_run(self, state, rng, use_ema):
    """The task's `evaluate_run` on the current (EMA) variables, as host floats."""
    variables = self.variables(state, use_ema)
    with self._context():
      out = jax.device_get(self._run_eval(variables, rng))
    return {k: float(v) for k, v in out.items()}

  @property
  def has_eval(self):
    return self._eval is not None
