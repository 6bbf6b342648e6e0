"""The fit loop: epochs of sharded jitted steps, training metrics summed on the device (read every
FETCH_EVERY steps and FETCH_SECONDS at least, with the check that the run is still finite),
validation every epoch (it picks the checkpoint; read while the next epoch starts), checkpoints
on a time budget (`--checkpoint-every-s`; always at the end and on SIGTERM / Ctrl-C; the best
state kept on the device until its write). It knows the task only through the `Task` protocol."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxbrain.config import Config
from jaxbrain.data.batching import dispatch_plan, epoch_order
from jaxbrain.errors import UserError
from jaxbrain.folders import RunDir
from jaxbrain.train import sharding
from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.train.outputs import RunWriter, epoch_overlays, overlay_rows

FETCH_EVERY = 25  # training steps at least between reads of the metrics (progress bar, non-finite check) ...
FETCH_SECONDS = 2.0  # ... and seconds at least: short steps are not held up by a read every few milliseconds
LOSS_SLOTS = 4096  # each step's loss kept on the device until read: a read comes before they run out


class NonFiniteError(UserError):
  """Training produced a NaN or inf loss or weight; the run stops before saving it."""


class Interrupted(KeyboardInterrupt):
  """SIGTERM/SIGINT arrived; the state was checkpointed before raising."""


class StopFlag:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps, so it can checkpoint first."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def start_position() -> dict:
  """The resume record of a run that has not trained: epoch and batch reached, best score so far."""
  return {'epoch': 0, 'batch': 0, 'best': None, 'best_epoch': None, 'sums': {}}


@dataclasses.dataclass
class PendingValidation:
  """An epoch's validation, dispatched and not yet read: it runs on the device while the next
  epoch's first steps are queued, and is read at the next fetch. `state` is a copy of the state the
  epoch ended with (never donated: it is the best candidate until the outputs say otherwise);
  `record` what its epoch line needs (the training sums and seconds)."""
  epoch: int
  state: object
  outputs: Callable[[], dict]
  record: dict


def fit(task, config: Config, split, mesh, state, train_steps: dict, dispatch_outputs: Callable,
        checkpoints: Checkpoints, position: dict, run: RunDir, writer: RunWriter | None, timing: dict, began: float,
        progress: bool):
  """Trains from `position` to `config.epochs`; returns (the last state, its position record).
  `train_steps[k]` runs k steps per dispatch on `mesh`; `dispatch_outputs(state, indices)` queues the
  eval step over `indices` and returns the function that reads its outputs; `writer` (None on
  processes that write nothing) logs every epoch.

  An epoch's validation is read after the next epoch's first fetch (at once after the last epoch,
  before any checkpoint of a later state is written, and before stopping on a signal), so the
  device starts the next epoch instead of waiting for the host's metrics. A checkpoint written at
  an epoch's end whose validation was not read yet says so (`validate`): a resume validates that
  state first, as the uninterrupted run did."""
  data, steps_per_epoch = task.data, task.steps_per_epoch
  per_dispatch = max(train_steps)
  shown_rows = overlay_rows(data.label[split.validation])  # the validation slices TensorBoard shows each epoch
  written, best_unwritten = _clock(), None  # when the last checkpoint write came; (state, position) not written yet
  pending = None
  if 'validate' in position:  # resumed from an epoch's end before its validation was read
    pending = _dispatched(state, position['epoch'] - 1, position.pop('validate'), dispatch_outputs, split)

  def settle():
    """Reads the pending validation: the epoch's line, and the best state when it improved."""
    nonlocal pending, position, best_unwritten
    outputs = pending.outputs()
    metrics = task.metrics(outputs, split.validation)
    epoch, score, best = pending.epoch, metrics[task.selection], position['best']
    if not math.isnan(score) and (best is None or score > best):
      position = {**position, 'best': score, 'best_epoch': epoch + 1}
      best_unwritten = (pending.state, {'epoch': epoch + 1, 'batch': 0, 'best': score, 'best_epoch': epoch + 1,
                                        'sums': {}})
    if writer is not None:
      record = {'epoch': epoch + 1, 'step': int(jax.device_get(pending.state.step)),
                **{f'train_{name}': total / max(steps_per_epoch, 1) for name, total in pending.record['sums'].items()},
                **{f'validation_{k}': metrics[k] for k in task.headline}, 'validation_loss': metrics['loss'],
                'training_seconds': pending.record['training_seconds'],
                'elapsed_seconds': pending.record['elapsed_seconds']}
      writer.epoch(record, keep_epochs_below=epoch + 1)
      shown_slices = split.validation[shown_rows]
      writer.images('eval/overlays', epoch_overlays(data.image[shown_slices], data.mask[shown_slices], outputs,
                                                    shown_rows), epoch + 1)
      _print_epoch(record, task, config)
    pending = None

  with StopFlag() as stop:
    for epoch in range(position['epoch'], config.epochs):
      start, epoch_began = position['batch'], time.perf_counter()
      bar = tqdm(total=steps_per_epoch, initial=start, desc=f'epoch {epoch + 1}/{config.epochs}', unit='batch',
                 disable=not progress, leave=False)
      order = epoch_order(split.train, config.seed, epoch, data.label, config.data.tumor_share)
      plan = dispatch_plan(steps_per_epoch, per_dispatch, start)
      totals = sharding.replicate(_device_totals(position['sums']), mesh)
      fetched_upto, fetched_at = start, time.perf_counter()
      fetch = functools.partial(_fetched_sums, epoch=epoch, run=run, checkpoints=checkpoints, writer=writer,
                                offset=epoch * steps_per_epoch, learning_rate=task.learning_rate)
      inputs = contextlib.closing(sharding.prefetched(
          functools.partial(train_steps[count].put,
                            task.rows('train', dispatch_rows(order, b, count, config.batch_size)))
          for b, count in plan))
      with inputs as placed_inputs:
        for (b, count), placed_input in zip(plan, placed_inputs):
          state, metrics = train_steps[count].run(state, placed_input)
          totals = accumulate(totals, metrics, b)  # on the device: no host round trip per step
          done = b + count
          bar.update(count)
          if timing['seconds_to_first_step'] is None:  # once per process: compile included
            timing['seconds_to_first_step'] = _seconds_when_ready(metrics, began)
          room = done + per_dispatch - fetched_upto <= LOSS_SLOTS  # for the next dispatch's losses
          if stop.signal is None and room and (done - fetched_upto < FETCH_EVERY
                                               or time.perf_counter() - fetched_at < FETCH_SECONDS):
            continue
          sums = fetch(totals, fetched_upto=fetched_upto, batch=done)
          fetched_upto, fetched_at = done, time.perf_counter()
          bar.set_postfix({name: f'{total / done:.4f}' for name, total in sums.items()})
          if pending is not None:
            settle()
          if stop.signal is not None:
            _write(checkpoints, state, {**position, 'epoch': epoch, 'batch': done, 'sums': sums}, best_unwritten)
            checkpoints.close()
            raise Interrupted(f'stopped by signal {stop.signal} at epoch {epoch + 1}, batch {done}; '
                              'checkpoint saved')
      sums = fetch(totals, fetched_upto=fetched_upto, batch=steps_per_epoch)
      if pending is not None:  # an epoch shorter than one fetch
        settle()
      bar.close()
      record = {'sums': sums, 'training_seconds': time.perf_counter() - epoch_began,
                'elapsed_seconds': time.perf_counter() - began}  # the epoch's end: its validation queued
      pending = _dispatched(state, epoch, record, dispatch_outputs, split)
      position = {**position, 'epoch': epoch + 1, 'batch': 0, 'sums': {}}
      if epoch + 1 == config.epochs:
        settle()
      due = (config.checkpoint_every_s <= 0 or epoch + 1 == config.epochs
             or _clock() - written >= config.checkpoint_every_s)
      if due:
        _write(checkpoints, state, {**position, **({'validate': record} if pending else {})}, best_unwritten)
        written, best_unwritten = _clock(), None
  if pending is not None:  # resumed at the end of a run whose last validation was not read
    settle()
    _write(checkpoints, state, position, best_unwritten)
  return state, position


def _dispatched(state, epoch: int, record: dict, dispatch_outputs: Callable, split) -> PendingValidation:
  """The validation of the state an epoch ended with, queued on a copy of that state (the next
  step donates the state's own buffers)."""
  kept = jax.tree.map(jnp.copy, state)
  return PendingValidation(epoch, kept, dispatch_outputs(kept, split.validation), record)


_clock = time.monotonic  # when checkpoints are due (a test drives it)


def _write(checkpoints: Checkpoints, state, position: dict, best_unwritten: tuple | None) -> None:
  """The last state, after the best one when that changed since the last write: a kill after any
  write resumes from a last checkpoint whose best record is on disk, so the replayed epochs select
  what an uninterrupted run selects."""
  if best_unwritten is not None:
    checkpoints.save_best(*best_unwritten)
  checkpoints.save(state, position)


def _print_epoch(record: dict, task, config: Config) -> None:
  """One console line per epoch: the training metrics and the validation metrics the task shows."""
  wanted = {f'validation_{k}' for k in (*task.shown, 'loss')}
  shown = ', '.join(f'{k} {v:.4f}' for k, v in record.items()
                    if isinstance(v, float) and (k.startswith('train_') or k in wanted))
  rate = _rate(task.learning_rate, record['step'])
  print(f'epoch {record["epoch"]}/{config.epochs} ({record["training_seconds"]:.0f} s, lr {rate:.3g}): {shown}',
        flush=True)


def _device_totals(sums: dict) -> dict:
  """Running sums of the training metrics, kept on the device, from a (resumed) host record; room
  for the losses of every step between two fetches (LOSS_SLOTS)."""
  return {'sums': {k: jnp.asarray(v, jnp.float32) for k, v in sums.items()},
          'first_nonfinite': jnp.asarray(-1, jnp.int32), 'loss_then': jnp.asarray(0.0, jnp.float32),
          'losses': jnp.zeros(LOSS_SLOTS, jnp.float32)}


@jax.jit
def accumulate(totals: dict, metrics: dict, before: int) -> dict:
  """Adds one dispatch's metrics (one step's, or [K] stacked of K steps after `before` batches) to
  the running sums, keeps each step's loss for TensorBoard (batch k in slot (k - 1) % slots, read at
  the next fetch) and remembers the first batch whose loss or new weights were not finite (with its
  loss), all on the device."""
  metrics = {k: jnp.atleast_1d(v) for k, v in metrics.items()}
  finite = metrics.pop('finite')
  sums = {k: totals['sums'].get(k, 0.0) + jnp.sum(v.astype(jnp.float32)) for k, v in metrics.items()}
  losses = metrics['loss'].astype(jnp.float32)
  batches = before + 1 + jnp.arange(losses.shape[0])
  first_bad = jnp.argmin(finite)
  newly = (totals['first_nonfinite'] < 0) & ~jnp.all(finite)
  slots = totals['losses'].shape[0]
  return {'sums': sums, 'first_nonfinite': jnp.where(newly, batches[first_bad], totals['first_nonfinite']),
          'loss_then': jnp.where(newly, losses[first_bad], totals['loss_then']),
          'losses': totals['losses'].at[(batches - 1) % slots].set(losses)}


def dispatch_rows(order: np.ndarray, first: int, count: int, batch_size: int) -> np.ndarray:
  """Dataset indices of batches first..first+count-1 of the epoch `order`: [B], or [count, B]."""
  rows = order[first * batch_size:(first + count) * batch_size]
  return rows.reshape(count, batch_size) if count > 1 else rows


def _seconds_when_ready(outputs, since: float) -> float:
  """Seconds from `since` until `outputs` are computed (a host sync: used once per run)."""
  jax.block_until_ready(outputs)
  return time.perf_counter() - since


def _rate(learning_rate, step: int) -> float:
  """The learning rate of optimizer step `step` (counted from 0), from a number or an optax schedule."""
  return float(learning_rate(step) if callable(learning_rate) else learning_rate)


def _fetched_sums(totals: dict, *, epoch: int, run: RunDir, checkpoints: Checkpoints, writer, offset: int,
                  fetched_upto: int, batch: int, learning_rate) -> dict:
  """The running sums on the host, with the losses of batches fetched_upto+1..batch written to
  TensorBoard at their global steps (`offset` + batch); stops the run if a step went non-finite
  (nothing of it is saved)."""
  fetched = jax.device_get(totals)
  if writer is not None and fetched['first_nonfinite'] < 0:
    batches = range(fetched_upto + 1, batch + 1)
    slots = len(fetched['losses'])
    writer.steps([offset + k for k in batches], [fetched['losses'][(k - 1) % slots] for k in batches],
                 [_rate(learning_rate, offset + k - 1) for k in batches])
  if fetched['first_nonfinite'] >= 0:
    checkpoints.close()
    raise NonFiniteError(f'training diverged at epoch {epoch + 1}, step {int(fetched["first_nonfinite"])}: the loss '
                         f'({float(fetched["loss_then"])}) or the weights are no longer finite; nothing of it was saved, '
                         f'the last finite checkpoint is kept in {run}; lower --learning-rate and start again')
  return {k: float(v) for k, v in fetched['sums'].items()}
