"""Orbax checkpoints: periodic async saves, keep-N, auto-resume, the data iterator's state.

A checkpoint step holds `state` (the TrainState pytree, without a device axis) and
`data` (the train iterator's JSON state), so a resumed run continues bit-for-bit.
"""

import os

import orbax.checkpoint as ocp

from train.errors import UserError


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with clear errors on bad checkpoints."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, data_state, force: bool = False) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, step: int, abstract_state):
    """Restores `step` onto the shapes/shardings of `abstract_state`; (state, data_state)."""
    where = os.path.join(self.directory, str(step))
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for corrupt / mismatched trees
      reason = ' '.join(str(e).split())[:300]
      raise UserError(f'cannot restore checkpoint {where}: {type(e).__name__}: {reason}. '
                      f'It is corrupt or from another config; it was left untouched. '
                      f'Move it aside, or pass another --workdir') from None
    _check_shapes(out['state'], abstract_state, where)
    return out['state'], out['data']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _check_shapes(restored, abstract, where):
  import jax
  bad = []
  flat_r = jax.tree_util.tree_flatten_with_path(restored)[0]
  flat_a = jax.tree.leaves(abstract)
  for (path, r), a in zip(flat_r, flat_a):
    if tuple(r.shape) != tuple(a.shape):
      bad.append(f'{jax.tree_util.keystr(path)}: {tuple(r.shape)} vs {tuple(a.shape)}')
  if bad:
    raise UserError(f'checkpoint {where} does not match this config ({"; ".join(bad[:3])}); '
                    f'it was left untouched. Move it aside, or pass another --workdir')
