"""Devices, the Mesh, logical-axis rules, and multi-host initialisation.

Models annotate params with logical axis names ('embed', 'mlp', 'heads', 'batch', ...);
`config.sharding_rules` maps those names onto the mesh axes of `config.mesh`. Model code
never mentions a mesh.
"""

import os

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from train import peers
from train.errors import UserError

# The batch is split over every axis that holds replicas of the data: `expert` too, which
# splits a Mixture-of-Experts layer's experts and is a data axis for every other layer
# (GShard's expert parallelism: tokens travel to their experts' devices by all-to-all).
BATCH_AXES = ('data', 'fsdp', 'expert')
# Axes every mesh has; make_mesh adds any a config leaves out with size 1, so sharding
# rules may name them whatever the config's mesh. `sequence` splits activations along
# their length (sequence parallelism: the rule ('length', 'sequence')); attention then
# all-gathers keys and values over it, which XLA inserts.
# `stage` splits a scanned stack's layers into pipeline stages (arch/layers/pipeline.py).
DEFAULT_AXES = (('data', -1), ('fsdp', 1), ('tensor', 1), ('expert', 1), ('sequence', 1),
                ('stage', 1))
# Rules every config gets for the logical names it does not map itself. 'height': a CNN's
# feature-map rows over `sequence`, spatial parallelism (arch/layers/spatial.py: ResNet and
# ConvMixer; XLA exchanges the convolutions' halo rows between neighbours).
# Which family supports which form: data and FSDP every family; tensor the Transformers
# (heads, mlp, vocabulary) and the CNNs' channels ('conv_out'); sequence GPT/LLaMA (length)
# and ResNet/ConvMixer (height); stage (pipelines) the scanned stacks of GPT, LLaMA and
# ConvMixer (arch/layers/pipeline.py); expert the MoE layers.
# 'kv_heads': attention's key/value heads, split like the query heads; a config whose
# tensor axis is wider than its key/value heads (GQA) adds ('kv_heads', None) to its
# sharding_rules and keeps them whole on every device (each computes every one of them).
DEFAULT_RULES = (('height', 'sequence'), ('kv_heads', 'tensor'))


def maybe_initialize_distributed(config) -> None:
  """Calls `jax.distributed.initialize` when the config or the environment asks for it.

  Config: `distributed.coordinator_address`, `num_processes`, `process_id` (explicit, as
  for two local CPU processes); environment: JAX_COORDINATOR_ADDRESS (or a cluster that
  jax auto-detects, when `distributed.auto` is set). Idempotent.
  """
  dist = config.get('distributed') or {}
  explicit = bool(dist.get('coordinator_address'))
  from_env = bool(os.environ.get('JAX_COORDINATOR_ADDRESS')) or dist.get('auto', False)
  if not (explicit or from_env):
    return
  if jax.distributed.is_initialized():
    return
  # Only CPU devices read this; asking jax for the backend here would start it too early.
  if dist.get('cpu_collectives', 'gloo'):
    jax.config.update('jax_cpu_collectives_implementation', dist.get('cpu_collectives', 'gloo'))
  # jax aborts every survivor after its own heartbeat timeout; the peer watch speaks first.
  timeout_s = float(dist.get('peer_timeout_s', 60))
  kwargs = dict(heartbeat_timeout_seconds=int(max(100, 2 * timeout_s)))
  if explicit:
    kwargs.update(coordinator_address=dist.coordinator_address,
                  num_processes=int(dist.num_processes), process_id=int(dist.process_id))
    if dist.get('local_device_ids') is not None:
      kwargs['local_device_ids'] = dist.local_device_ids
  jax.distributed.initialize(**kwargs)
  from jax._src import distributed as jax_distributed
  peers.start(jax_distributed.global_state.client, jax.process_index(), jax.process_count(),
              timeout_s)


def make_mesh(config) -> jax.sharding.Mesh:
  """The mesh of `config.mesh` (axis name -> size; one size may be -1 for 'the rest')."""
  axes = dict(config.get('mesh') or DEFAULT_AXES[:3])
  for name, size in DEFAULT_AXES[1:]:
    axes.setdefault(name, size)
  n = jax.device_count()
  fixed = int(np.prod([s for s in axes.values() if s != -1]))
  if list(axes.values()).count(-1) > 1:
    raise UserError(f'config.mesh may have at most one -1 axis, got {axes}')
  if n % fixed:
    raise UserError(f'config.mesh {axes} does not divide the {n} devices')
  shape = [n // fixed if s == -1 else s for s in axes.values()]
  if int(np.prod(shape)) != n:
    raise UserError(f'config.mesh {axes} has {int(np.prod(shape))} devices; there are {n}')
  if 'data' not in axes:
    raise UserError(f'config.mesh must have a data axis (size -1: every device); got {axes}')
  # Auto axes: XLA propagates shardings from the logical annotations (GSPMD style).
  return jax.make_mesh(shape, tuple(axes),
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def rules(config):
  """config.sharding_rules, then DEFAULT_RULES for the names they leave out."""
  own = tuple((k, tuple(v) if isinstance(v, list) else v)
              for k, v in (config.get('sharding_rules') or ()))
  named = {k for k, _ in own}
  return own + tuple(rule for rule in DEFAULT_RULES if rule[0] not in named)


def data_parallel_size(mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def local_data_parallel_size(mesh) -> int:
  """How many data-parallel shards this process's part of a global batch spans."""
  return max(1, data_parallel_size(mesh) // jax.process_count())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(abstract_tree, mesh, config):
  """NamedShardings for a tree of (possibly `nn.LogicallyPartitioned`) abstract values.
  A UserError names the first leaf with a dimension its mesh axes do not divide."""
  specs = nn.get_partition_spec(abstract_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules(config))
  check_divisible(abstract_tree, shardings, mesh)
  check_stages(shardings, mesh)
  return shardings


def check_stages(shardings, mesh) -> None:
  """A `stage` axis > 1 needs a state split over it (a scanned layer stack, which GPT,
  LLaMA and ConvMixer run as a pipeline); anything else would compute the same step on
  every stage."""
  stages = mesh.shape.get('stage', 1)
  if stages <= 1:
    return
  used = any('stage' in (a if isinstance(a, tuple) else (a,))
             for sharding in jax.tree.leaves(shardings) for a in sharding.spec if a)
  if not used:
    raise UserError(f'config.mesh.stage={stages} splits a scanned layer stack into pipeline '
                    f'stages, and this model has none; pipelines run GPT and LLaMA with '
                    f'--config.model.scan_layers=true, and ConvMixer '
                    f'(configs/convmixer_digits.py; arch/layers/pipeline.py)')


def _key_name(key):
  return str(getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key))))


def check_divisible(abstract_tree, shardings, mesh) -> None:
  """Every sharded dimension must split evenly over its mesh axes (jax's own error is an
  IndivisibleError traceback from deep inside jit)."""
  boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)
  leaves = jax.tree_util.tree_flatten_with_path(abstract_tree, is_leaf=boxed)[0]
  for (path, leaf), sharding in zip(leaves, jax.tree.leaves(shardings)):
    names = getattr(leaf, 'names', None)
    value = nn.meta.unbox(leaf)
    for dim, (size, axes) in enumerate(zip(np.shape(value), sharding.spec)):
      axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      ways = int(np.prod([mesh.shape[a] for a in axes]))
      if size % ways:
        logical = f" (logical axis '{names[dim]}')" if names and names[dim] else ''
        raise UserError(
            f"config.mesh: {'/'.join(map(_key_name, path))} has size {size} in dimension "
            f"{dim}{logical}, which mesh axis {' x '.join(axes)} of size {ways} does not "
            f"divide; choose a mesh size that divides {size} or map that logical axis to "
            f"another mesh axis (config.sharding_rules)")


def check_batch(config, mesh) -> None:
  """The global batch must split evenly over data-parallel devices, hosts and micro-steps."""
  dp, procs, accum = data_parallel_size(mesh), jax.process_count(), config.get('grad_accum_steps', 1)
  for what, size in (('batch_size', config.batch_size),
                     ('eval_batch_size', config.get('eval_batch_size') or config.batch_size)):
    if size % dp or size % procs:
      raise UserError(f'global {what}={size} is not divisible by the {dp} data-parallel devices '
                      f'and {procs} processes; choose a multiple of {np.lcm(dp, procs)}')
  if config.batch_size % (accum * dp):
    raise UserError(f'batch_size={config.batch_size} must be divisible by grad_accum_steps '
                    f'({accum}) x data-parallel devices ({dp})')
