"""Orbax checkpoints of a run: the last few (to resume) and the best by a validation metric.

A checkpoint holds the train state and a small JSON position record (epoch, batches done in
that epoch, best metric so far). The fit loop decides when to write (`--checkpoint-every-s`). On accelerators saving is asynchronous: orbax copies the state
to host memory before `save` returns (the next step may then donate and overwrite its buffers) and
writes the files from the otherwise idle host while training goes on. On CPUs the host is the
accelerator, so a background write would only take cores from the step: saving waits there.
Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run killed
at any moment resumes from its newest complete checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxbrain.folders import RunDir
from jaxbrain.train.state import TrainState


def _manager(directory: Path, keep: int, asynchronous: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous, create=True)
  return ocp.CheckpointManager(directory.resolve(), options=options, item_names=RunDir.CHECKPOINT_ITEMS)


def _save(manager: ocp.CheckpointManager, state: TrainState, position: dict) -> None:
  step = int(jax.device_get(state.step))
  if manager.latest_step() != step:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(position)),
                 force=True)


class Checkpoints:
  """`last/` keeps the newest `keep` checkpoints; `best/` keeps the one with the best metric."""

  def __init__(self, run: RunDir | str | Path, keep: int = 3, asynchronous: bool | None = None):
    """`asynchronous`: write in the background (default: when JAX's backend is not the CPU)."""
    self.asynchronous = jax.default_backend() != 'cpu' if asynchronous is None else asynchronous
    run = RunDir.of(run)
    self.last = _manager(run.checkpoints('last'), keep, self.asynchronous)
    self.best = _manager(run.checkpoints('best'), 1, self.asynchronous)

  def save(self, state: TrainState, position: dict) -> None:
    """Writes `state` as the newest checkpoint (asynchronously: returns once orbax holds a host copy;
    `close` waits for the files)."""
    _save(self.last, state, position)

  def save_best(self, state: TrainState, position: dict) -> None:
    """Writes `state`, validation's best so far, as the best checkpoint."""
    _save(self.best, state, position)

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
