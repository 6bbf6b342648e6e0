"""Orbax checkpoints of a run: the last few (to resume) and the best by a validation metric.

A checkpoint holds the train state and a small JSON `progress` record (epoch, batches done in
that epoch, best metric so far). Saving is asynchronous: the state is copied on the device (the
training step then donates and overwrites its own buffers, never the copy) and orbax writes the copy
while training goes on. Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a run killed at any moment resumes from its newest complete checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxbrain.train.state import TrainState


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(directory.resolve(), options=options, item_names=('state', 'progress'))


_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))  # fresh device buffers, owned by the checkpoint


class Checkpoints:
  """`last/` keeps the newest `keep` checkpoints; `best/` keeps the one with the best metric."""

  def __init__(self, run_dir: str | Path, keep: int = 3):
    self.last = _manager(Path(run_dir) / 'checkpoints' / 'last', keep)
    self.best = _manager(Path(run_dir) / 'checkpoints' / 'best', 1)

  def save(self, state: TrainState, progress: dict, best: bool = False) -> None:
    """Starts writing `state` (returns before the files are written; `close` waits for them)."""
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(state=ocp.args.StandardSave(_copy(state)), progress=ocp.args.JsonSave(progress))
    managers = (self.last, self.best) if best else (self.last,)
    for manager in managers:
      if manager.latest_step() != step:
        manager.save(step, args=args, force=True)

  def latest_step(self) -> int | None:
    return self.last.latest_step()

  def restore(self, like: TrainState, which: str = 'last') -> tuple[TrainState, dict]:
    """The newest complete checkpoint (`which='best'`: the best one), shaped and sharded like `like`."""
    manager = self.last if which == 'last' else self.best
    manager.wait_until_finished()
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no complete checkpoint in {manager.directory}')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                             progress=ocp.args.JsonRestore()))
    return restored['state'], restored['progress']

  def close(self) -> None:
    """Waits for the writes in flight, then releases the managers."""
    self.last.close()
    self.best.close()
