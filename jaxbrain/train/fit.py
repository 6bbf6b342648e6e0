"""The fit loop: epochs of sharded jitted steps, training metrics summed on the device (read every
FETCH_EVERY steps and FETCH_SECONDS at least, with the check that the run is still finite),
validation every epoch (it picks the checkpoint; read while the next epoch starts), checkpoints
on a time budget (`--checkpoint-every-s`; always at the end and on SIGTERM / Ctrl-C; the best
state kept on the device until its write). It knows the task only through the `Task` protocol."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
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
from jaxbrain.train.progress import Candidate, Progress

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


@dataclasses.dataclass(frozen=True)
class FitJob:
  """What the epochs need beside the state: the task and its config and split, the `mesh`, the
  jitted `train_steps` (`train_steps[k]` runs k steps per dispatch), `dispatch_outputs(state,
  indices)` (queues the eval step over `indices` and returns the function that reads its outputs),
  the run's checkpoints and folder, its `writer` (None on processes that write nothing), the
  `timing` record to fill, when the run `began`, and whether to show progress bars."""
  task: object
  config: Config
  split: object
  mesh: object
  train_steps: dict
  dispatch_outputs: Callable
  checkpoints: Checkpoints
  run: RunDir
  writer: RunWriter | None
  timing: dict
  began: float
  progress: bool


def fit(job: FitJob, state, at: Progress) -> tuple[object, Progress]:
  """Trains from `at` to `job.config.epochs`; returns (the last state, its progress).

  An epoch's validation is read after the next epoch's first fetch (at once after the last epoch,
  before any checkpoint of a later state is written, and before stopping on a signal), so the
  device starts the next epoch instead of waiting for the host's metrics. A checkpoint written at
  an epoch's end whose validation was not read yet says so (`Progress.validate`): a resume
  validates that state first, as the uninterrupted run did."""
  config = job.config
  written, best = _clock(), None  # when the last checkpoint write came; the best state not written yet
  pending = None if at.validate is None else _dispatched(state, at.epoch - 1, at.validate, job)
  at = dataclasses.replace(at, validate=None)
  with StopFlag() as stop:
    for epoch in range(at.epoch, config.epochs):
      epoch_began = time.perf_counter()
      state, sums, pending, at, best = _train_epoch(job, state, at, epoch, pending, best, stop)
      record = {'sums': sums, 'training_seconds': time.perf_counter() - epoch_began,
                'elapsed_seconds': time.perf_counter() - job.began}  # the epoch's end: its validation queued
      pending = _dispatched(state, epoch, record, job)
      at = dataclasses.replace(at, epoch=epoch + 1, batch=0, sums={})
      if epoch + 1 == config.epochs:
        pending, at, best = _settled(job, pending, at, best)
      if (config.checkpoint_every_s <= 0 or epoch + 1 == config.epochs
          or _clock() - written >= config.checkpoint_every_s):
        _write(job.checkpoints, state, dataclasses.replace(at, validate=pending.record if pending else None), best)
        written, best = _clock(), None
  if pending is not None:  # resumed at the end of a run whose last validation was not read
    pending, at, best = _settled(job, pending, at, best)
    _write(job.checkpoints, state, at, best)
  return state, at


def _train_epoch(job: FitJob, state, at: Progress, epoch: int, pending: PendingValidation | None,
                 best: Candidate | None, stop: StopFlag):
  """Epoch `epoch` from batch `at.batch`, reading the previous epoch's validation at the first
  fetch; on a signal, checkpoints and raises `Interrupted`. Returns (state, the epoch's training
  sums, the validation still pending, progress, the best state not written)."""
  task, config = job.task, job.config
  steps_per_epoch, per_dispatch = task.steps_per_epoch, max(job.train_steps)
  bar = tqdm(total=steps_per_epoch, initial=at.batch, desc=f'epoch {epoch + 1}/{config.epochs}', unit='batch',
             disable=not job.progress, leave=False)
  order = epoch_order(job.split.train, config.seed, epoch, task.data.label, config.data.tumor_share)
  plan = dispatch_plan(steps_per_epoch, per_dispatch, at.batch)
  totals = sharding.replicate(_device_totals(at.sums), job.mesh)
  fetched_upto, fetched_at = at.batch, time.perf_counter()
  fetch = functools.partial(_fetched_sums, epoch=epoch, run=job.run, checkpoints=job.checkpoints, writer=job.writer,
                            offset=epoch * steps_per_epoch, learning_rate=task.learning_rate)
  inputs = contextlib.closing(sharding.prefetched(
      functools.partial(job.train_steps[count].put, task.rows('train', dispatch_rows(order, b, count, config.batch_size)))
      for b, count in plan))
  with inputs as placed_inputs:
    for (b, count), placed_input in zip(plan, placed_inputs):
      state, metrics = job.train_steps[count].run(state, placed_input)
      totals = accumulate(totals, metrics, b)  # on the device: no host round trip per step
      done = b + count
      bar.update(count)
      if job.timing['seconds_to_first_step'] is None:  # once per process: compile included
        job.timing['seconds_to_first_step'] = _seconds_when_ready(metrics, job.began)
      room = done + per_dispatch - fetched_upto <= LOSS_SLOTS  # for the next dispatch's losses
      if stop.signal is None and room and (done - fetched_upto < FETCH_EVERY
                                           or time.perf_counter() - fetched_at < FETCH_SECONDS):
        continue
      sums = fetch(totals, fetched_upto=fetched_upto, batch=done)
      fetched_upto, fetched_at = done, time.perf_counter()
      bar.set_postfix({name: f'{total / done:.4f}' for name, total in sums.items()})
      if pending is not None:
        pending, at, best = _settled(job, pending, at, best)
      if stop.signal is not None:
        _write(job.checkpoints, state, dataclasses.replace(at, epoch=epoch, batch=done, sums=sums), best)
        job.checkpoints.close()
        raise Interrupted(f'stopped by signal {stop.signal} at epoch {epoch + 1}, batch {done}; checkpoint saved')
  sums = fetch(totals, fetched_upto=fetched_upto, batch=steps_per_epoch)
  if pending is not None:  # an epoch shorter than one fetch
    pending, at, best = _settled(job, pending, at, best)
  bar.close()
  return state, sums, pending, at, best


def _settled(job: FitJob, pending: PendingValidation, at: Progress, best: Candidate | None):
  """Reads the pending validation: the epoch's line, and the best state when it improved. Returns
  (None: nothing pending, progress, the best state not written)."""
  outputs = pending.outputs()
  metrics = job.task.metrics(outputs, job.split.validation)
  score = metrics[job.task.selection]
  if at.improved_by(score):
    at = dataclasses.replace(at, best=score, best_epoch=pending.epoch + 1)
    best = Candidate(pending.state, Progress(pending.epoch + 1, 0, score, pending.epoch + 1))
  if job.writer is not None:
    _log_epoch(job, pending, metrics, outputs)
  return None, at, best


def _log_epoch(job: FitJob, pending: PendingValidation, metrics: dict, outputs: dict) -> None:
  """An epoch's line in metrics.jsonl, TensorBoard (with overlays of a few validation slices) and
  on the console."""
  task, epoch, data = job.task, pending.epoch, job.task.data
  record = {'epoch': epoch + 1, 'step': int(jax.device_get(pending.state.step)),
            **{f'train_{name}': total / max(task.steps_per_epoch, 1) for name, total in pending.record['sums'].items()},
            **{f'validation_{k}': metrics[k] for k in task.headline}, 'validation_loss': metrics['loss'],
            'training_seconds': pending.record['training_seconds'], 'elapsed_seconds': pending.record['elapsed_seconds']}
  job.writer.epoch(record, keep_epochs_below=epoch + 1)
  shown_rows = overlay_rows(data.label[job.split.validation])  # the validation slices TensorBoard shows each epoch
  shown_slices = job.split.validation[shown_rows]
  job.writer.images('eval/overlays', epoch_overlays(data.image[shown_slices], data.mask[shown_slices], outputs,
                                                    shown_rows), epoch + 1)
  _print_epoch(record, task, job.config)


def _dispatched(state, epoch: int, record: dict, job: FitJob) -> PendingValidation:
  """The validation of the state an epoch ended with, queued on a copy of that state (the next
  step donates the state's own buffers)."""
  kept = jax.tree.map(jnp.copy, state)
  return PendingValidation(epoch, kept, job.dispatch_outputs(kept, job.split.validation), record)


_clock = time.monotonic  # when checkpoints are due (a test drives it)


def _write(checkpoints: Checkpoints, state, at: Progress, best: Candidate | None) -> None:
  """The last state, after the best one when that changed since the last write: a kill after any
  write resumes from a last checkpoint whose best record is on disk, so the replayed epochs select
  what an uninterrupted run selects."""
  if best is not None:
    checkpoints.save_best(best.state, best.progress.to_json())
  checkpoints.save(state, at.to_json())


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
