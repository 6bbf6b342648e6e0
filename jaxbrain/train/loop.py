"""The one runner, for classification and segmentation: `train_and_evaluate(config)`.

files -> validated examples -> train / validation / test split -> the task (`train/tasks.py`)
-> its arrays placed on the devices once (or fed from the host when they do not fit) -> batches of
row indices -> sharded jitted step that gathers its batch -> training metrics summed on the device (read every
FETCH_EVERY steps, with the check that the run is still finite) -> validation metrics every epoch
(they pick the checkpoint) -> the selected checkpoint evaluated once on test, then the evaluators
named in the config -> metrics, predictions, checkpoints and plots in `workdir/<experiment>/<run>/`.
Side effects (files, signals, progress bars) live here; everything it calls is pure.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import fcntl
import json
import math
import shutil
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxbrain.data import (SliceArrays, check_batch_size, check_disjoint, fingerprint, make_split, split_record,
                           write_phantom)
from jaxbrain.data.batching import dispatch_plan, epoch_length, epoch_order, eval_index_batches
from jaxbrain.config import Config
from jaxbrain.errors import ConfigError, UserError
from jaxbrain.runs import read_config
from jaxbrain.train import sharding
from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.files import write_json
from jaxbrain.pages import write_run_report
from jaxbrain.train.outputs import RunWriter, epoch_overlays, overlay_rows, plot_curves, read_history
from jaxbrain.train.state import create_train_state
from jaxbrain.train.steps import with_weight_average
from jaxbrain.train.strategies import learning_rate_schedule
from jaxbrain.train.tasks import build_task


class RunExistsError(UserError, FileExistsError):
  """The run directory already holds a run; resume it or overwrite it explicitly."""


class NonFiniteError(UserError):
  """Training produced a NaN or inf loss or weight; the run stops before saving it."""


class Interrupted(KeyboardInterrupt):
  """SIGTERM/SIGINT arrived; the state was checkpointed before raising."""


def _process0_first(fn):
  """Runs `fn` on process 0 first (it may write shared files), then on the others."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('jaxbrain: process 0 prepared the data')
  return result if jax.process_index() == 0 else fn()


def prepare_data(config: Config) -> tuple[SliceArrays, str, str]:
  """(data, description, content fingerprint) of `config.data.data_dir`, or of the embedded phantom
  dataset (generated once) when it is None."""
  return _process0_first(lambda: _load(config))


def _load(config: Config) -> tuple[SliceArrays, str, str]:
  from jaxbrain.data import builder  # tensorflow_datasets only for runs that load data (jaxbrain.data)
  cache_root, patients = Path(config.workdir) / 'tfds', config.data.phantom_patients
  if config.data.data_dir:
    root = Path(config.data.data_dir)
    source = f'kaggle_3m at {root.resolve()}'
  else:
    root = Path(config.workdir) / 'phantom' / f'{patients}p-seed0' / 'kaggle_3m'
    write_phantom(root, n_patients=patients, seed=0, exist_ok=True)
    source = f'phantom (synthetic, {patients} patients) at {root.resolve()}'
  content = fingerprint(root)
  return builder.load_dataset(root, builder.default_data_dir(root, cache_root, content)), source, content


EVALUATORS = 'jaxbrain.evaluators'  # the package evaluators named in the config come from, imported by name


def _check_evaluators(names) -> None:
  """Refuses, before any work, an evaluator name with no module in the evaluators package."""
  missing = [name for name in names if not name.isidentifier() or importlib.util.find_spec(f'{EVALUATORS}.{name}') is None]
  if missing:
    raise ConfigError(f'--evals {" ".join(missing)}: no such evaluator (modules of {EVALUATORS.replace(".", "/")}/)')


class _StopFlag:
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


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
  """Refuses, before any work, a run that would resume nothing or replace a run without --overwrite."""
  if resume and not (run_dir / 'config.json').is_file():
    raise UserError(f'{run_dir}: there is no run to resume there; drop --resume to start it')
  if run_dir.exists() and any(run_dir.iterdir()) and not resume and not overwrite:
    raise RunExistsError(f'{run_dir} already holds a run: pass --resume to continue it, --overwrite to '
                         'start it over, or --run-name NAME for a new one')


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
  """The run directory, emptied first unless resuming (what --overwrite asked for)."""
  if run_dir.exists() and any(run_dir.iterdir()) and not resume:
    shutil.rmtree(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _run_lock(run_dir: Path, take: bool):
  """Holds an exclusive lock (`<workdir>/.locks/<experiment>/<run>.lock`) while a run writes its
  directory (process 0 only), so a second run of the same name fails cleanly instead of mixing its
  files into the first's."""
  if not take:
    yield
    return
  lock = run_dir.parent.parent / '.locks' / run_dir.parent.name / f'{run_dir.name}.lock'
  lock.parent.mkdir(parents=True, exist_ok=True)
  with open(lock, 'a') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f'{run_dir}: another process is running this run now; wait for it to finish, or give '
                      '--run-name NAME for a new run') from None
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


RESUMABLE_CHANGES = ('epochs', 'data_dir')  # more epochs (recorded in resumes.jsonl); the data is compared by content


def check_resume(run_dir: Path, config: Config, content: str) -> dict | None:
  """Refuses to resume `run_dir` with another config than the one it started with (listing every
  field that differs) or on changed data. Returns the record of an epoch extension (`--epochs`
  raised), else None. The stored config.json is never rewritten."""
  try:
    stored_config, header = read_config(run_dir)
  except UserError as e:
    raise UserError(f'{e}; this run cannot be resumed') from None
  stored, current = stored_config.flat(), config.flat()
  changed = [f'{name} {stored.get(name)!r} -> {value!r}' for name, value in current.items()
             if name not in RESUMABLE_CHANGES and stored.get(name, value) != value]
  if config.epochs < stored['epochs']:
    changed.append(f'epochs {stored["epochs"]} -> {config.epochs} (only raising --epochs is allowed)')
  if changed:
    raise ConfigError(f'{run_dir}: --resume with a changed config ({"; ".join(changed)}); resume with the run\'s '
                      'own settings, or start a new run with --run-name NAME')
  if header.get('data_fingerprint', content) != content:
    raise UserError(f'{run_dir}: the data changed since this run started (fingerprint {header["data_fingerprint"]} '
                    f'-> {content}); a resumed run would mix two datasets: start a new run')
  if config.epochs > stored['epochs']:
    return {'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'epochs': [stored['epochs'], config.epochs]}
  return None


def _counts(data: SliceArrays, split, devices: int) -> dict:
  counts = {'devices': devices}
  for side, part in split.sides().items():
    counts.update({f'{side}_slices': len(part), f'{side}_patients': len(set(data.patient[part])),
                   f'{side}_tumor_slices': int(data.label[part].sum())})
  return counts


def train_and_evaluate(config: Config, resume: bool = False, overwrite: bool = False,
                       progress: bool = True) -> dict:
  """Trains `config` (classification or segmentation), picks the checkpoint on validation, evaluates
  it once on test, and returns the final metrics (also written to metrics.json; top-level keys
  are test's). `resume` continues the run of the same name with the same config (or more epochs)."""
  run_dir = Path(config.workdir) / config.experiment / config.resolved_run_name
  with _run_lock(run_dir, take=jax.process_index() == 0):
    return _train_and_evaluate(config, run_dir, resume, overwrite, progress)


def _train_and_evaluate(config: Config, run_dir: Path, resume: bool, overwrite: bool, progress: bool) -> dict:
  began = time.perf_counter()
  is_writer = jax.process_index() == 0
  _check_evaluators(config.task.evals)
  data, source, content = prepare_data(config)
  timing = {'seconds_to_data': time.perf_counter() - began, 'seconds_to_first_step': None}
  split = make_split(config.data.split, data.patient, data.label, fold=config.data.fold, seed=config.seed)
  if config.data.split == 'patient':
    check_disjoint(split, data.patient)
  per_epoch = epoch_length(split.train, data.label, config.data.tumor_share)
  if config.batch_size > per_epoch:
    raise ConfigError(f'--batch-size {config.batch_size} is larger than the {per_epoch} training slices of an epoch: '
                      'not one training step would run')
  extension = None
  if is_writer:
    _check_run_dir(run_dir, resume, overwrite)
    if resume:
      extension = check_resume(run_dir, config, content)
  task = build_task(config, data, split, progress=progress and is_writer)
  if is_writer:
    _prepare_run_dir(run_dir, resume)
  mesh = sharding.make_mesh()
  check_batch_size(config.batch_size, mesh.size)
  averaged = config.optimizer.ema_decay > 0
  state = sharding.replicate(create_train_state(task.variables, task.tx, config.seed, averaged), mesh)
  train_step = with_weight_average(task.train_step, config.optimizer.ema_decay) if averaged else task.train_step
  placed = {}  # device copies shared by the steps
  per_dispatch = config.steps_per_dispatch or (1 if jax.default_backend() == 'cpu' else 8)
  replicated = (sharding.replicated(mesh),) * 2
  train_steps = {count: sharding.feed(train_step, mesh, task.arrays('train'), replicated, donate_state=True,
                                      placed=placed, steps=count) for count in sorted({1, per_dispatch})}
  fed_eval = lambda step: sharding.feed(step, mesh, task.arrays('eval'), sharding.data_sharding(mesh),  # noqa: E731
                                       placed=placed)
  eval_step = fed_eval(task.eval_step)
  decision_steps = {name: fed_eval(step) for name, step in task.decision_steps.items()}

  def evaluate(state, indices: np.ndarray, step=eval_step) -> dict[str, np.ndarray]:
    """`step`'s outputs for `indices`, in their order: every batch dispatched (inputs placed ahead on
    a thread) before the outputs are fetched, once."""
    batches = list(eval_index_batches(indices, config.batch_size))
    placed_rows = sharding.prefetched(functools.partial(step.put, task.rows('eval', idx)) for idx, _ in batches)
    outputs = sharding.to_host([step.run(state, rows) for rows in placed_rows])
    return {k: np.concatenate([o[k][valid] for o, (_, valid) in zip(outputs, batches)]) for k in outputs[0]}

  checkpoints = Checkpoints(run_dir, config.keep_checkpoints)
  shown_rows = overlay_rows(data.label[split.validation])  # the validation slices TensorBoard shows each epoch
  shown_slices = split.validation[shown_rows]
  position = {'epoch': 0, 'batch': 0, 'best': None, 'best_epoch': None, 'sums': {}}
  if resume and checkpoints.latest_step() is not None:
    try:
      state, position = checkpoints.restore(state)
    except Exception as e:  # noqa: BLE001 -- orbax raises many kinds on damaged files
      raise UserError(f'{run_dir}/checkpoints/last: the newest checkpoint cannot be read ({type(e).__name__}: '
                      f'{str(e).splitlines()[0][:160] if str(e) else "damaged"}); delete that step folder to resume '
                      'from the one before, or start a new run') from e
    print(f'resumed {run_dir} at epoch {position["epoch"] + 1}, batch {position["batch"]}')
  counts = _counts(data, split, mesh.size)
  writer = None
  if is_writer and extension:
    with open(run_dir / 'resumes.jsonl', 'a') as f:
      f.write(json.dumps(extension) + '\n')
  if is_writer and not resume:
    write_json(run_dir / 'config.json', {**config.to_json(), 'init': task.init_description, 'data': source,
                                         'data_fingerprint': content, 'counts': counts, **task.facts})
    write_json(run_dir / 'split.json', split_record(split, config.data.split, config.seed, config.data.fold, content,
                                                    data.patient, data.slice))
  if is_writer:
    writer = RunWriter(run_dir)
    leak = ' (slices of one patient on several sides: patients leak, numbers are optimistic)' * (
        config.data.split == 'slice')
    print(f'{config.experiment}: {config.describe()}; init {task.init_description}; data {source}; '
          f'{config.data.split} split{leak}: '
          f'{counts["train_slices"]} train / {counts["validation_slices"]} validation / {counts["test_slices"]} test '
          f'slices ({counts["train_patients"]} / {counts["validation_patients"]} / {counts["test_patients"]} '
          f'patients); {mesh.size} device(s), data {"on the devices" if eval_step.resident else "fed from the host"}; '
          f'run dir {run_dir}', flush=True)

  steps_per_epoch = per_epoch // config.batch_size
  learning_rate = learning_rate_schedule(config.optimizer.learning_rate, config.optimizer.schedule,
                                         steps_per_epoch * config.epochs)
  with _StopFlag() as stop:
    for epoch in range(position['epoch'], config.epochs):
      start, epoch_began = position['batch'], time.perf_counter()
      bar = tqdm(total=steps_per_epoch, initial=start, desc=f'epoch {epoch + 1}/{config.epochs}', unit='batch',
                 disable=not (progress and is_writer), leave=False)
      order = epoch_order(split.train, config.seed, epoch, data.label, config.data.tumor_share)
      plan = dispatch_plan(steps_per_epoch, per_dispatch, start)
      totals = sharding.replicate(_device_totals(position['sums'], per_dispatch), mesh)
      fetched_upto = start
      inputs = contextlib.closing(sharding.prefetched(
          functools.partial(train_steps[count].put,
                            task.rows('train', _dispatch_rows(order, b, count, config.batch_size)))
          for b, count in plan))
      with inputs as placed_inputs:
        for (b, count), placed_input in zip(plan, placed_inputs):
          state, metrics = train_steps[count].run(state, placed_input)
          totals = _accumulate(totals, metrics, b)  # on the device: no host round trip per step
          done = b + count
          bar.update(count)
          if timing['seconds_to_first_step'] is None:  # once per process: compile included
            timing['seconds_to_first_step'] = _seconds_when_ready(metrics, began)
          if done - fetched_upto < FETCH_EVERY and stop.signal is None:
            continue
          sums = _fetched_sums(totals, epoch, run_dir, checkpoints, writer, epoch * steps_per_epoch, fetched_upto,
                               done, learning_rate)
          fetched_upto = done
          bar.set_postfix({name: f'{total / done:.4f}' for name, total in sums.items()})
          if stop.signal is not None:
            checkpoints.save(state, {**position, 'epoch': epoch, 'batch': done, 'sums': sums})
            checkpoints.close()
            raise Interrupted(f'stopped by signal {stop.signal} at epoch {epoch + 1}, batch {done}; '
                              f'checkpoint saved in {run_dir}; continue with --resume')
      sums = _fetched_sums(totals, epoch, run_dir, checkpoints, writer, epoch * steps_per_epoch, fetched_upto,
                           steps_per_epoch, learning_rate)
      training_seconds = time.perf_counter() - epoch_began
      bar.close()
      outputs = evaluate(state, split.validation)
      metrics = task.metrics(outputs, split.validation)
      score, best = metrics[task.selection], position['best']
      improved = not math.isnan(score) and (best is None or score > best)
      position = {'epoch': epoch + 1, 'batch': 0, 'best': score if improved else best,
                  'best_epoch': epoch + 1 if improved else position.get('best_epoch'), 'sums': {}}
      if is_writer:
        record = {'epoch': epoch + 1, 'step': int(jax.device_get(state.step)),
                  **{f'train_{name}': total / max(steps_per_epoch, 1) for name, total in sums.items()},
                  **{f'validation_{k}': metrics[k] for k in task.headline}, 'validation_loss': metrics['loss'],
                  'training_seconds': training_seconds, 'elapsed_seconds': time.perf_counter() - began}
        writer.epoch(record, keep_epochs_below=epoch + 1)
        writer.images('eval/overlays', epoch_overlays(data.image[shown_slices], data.mask[shown_slices], outputs,
                                                      shown_rows), epoch + 1)
        shown = ', '.join(f'{k} {v:.4f}' for k, v in record.items() if k.startswith(('train_', 'validation_')) and
                          isinstance(v, float) and not k.startswith(('validation_precision', 'validation_f1',
                                                                     'validation_iou')))
        rate = _rate(learning_rate, record['step'])
        print(f'epoch {epoch + 1}/{config.epochs} ({time.perf_counter() - epoch_began:.0f} s, lr {rate:.3g}): {shown}',
              flush=True)
      checkpoints.save(state, position, best=improved)

  selected, selection = _select(checkpoints, state, position, task.selection, config.epochs)
  validation = task.metrics(evaluate(selected, split.validation), split.validation)
  test_outputs = evaluate(selected, split.test)
  test = task.test_metrics(test_outputs, split.test)
  decision, decided, decided_outputs = task.decide(
      lambda name, indices: evaluate(selected, indices, decision_steps[name]), split, run_dir if is_writer else None)
  test.update(decided)
  test_outputs.update(decided_outputs)
  variables = selected.inference_variables()
  for name in config.task.evals:
    test.update(importlib.import_module(f'{EVALUATORS}.{name}').evaluate(task, variables, split.test, test_outputs,
                                                                         run_dir if is_writer else None))
  final = {**test, 'validation': validation, 'test': test, 'selected_checkpoint': selection}
  final.update({'task': config.task.name, 'split': config.data.split, 'fold': config.data.fold,
                'init': task.init_description, 'data': source, 'data_fingerprint': content, 'counts': counts,
                'epochs': config.epochs, 'experiment': config.experiment, 'model': config.describe(),
                'arch': getattr(config.model, 'arch', f'resunet-{getattr(config.model, "encoder", "")}'),
                'strategy': getattr(config.task, 'strategy', None), 'preprocess': config.data.preprocess,
                'image_size': config.data.image_size, 'data_on_devices': eval_step.resident,
                'steps_per_dispatch': per_dispatch,
                'timing': {**timing, 'seconds': time.perf_counter() - began}})
  checkpoints.close()
  if is_writer:
    write_json(run_dir / 'metrics.json', final)
    write_json(run_dir / 'decision.json', {**decision, 'checkpoint': selection['checkpoint']})
    plot_curves(run_dir, read_history(run_dir), tuple(task.headline[:3]))
    writer.hyperparameters(config.flat(), {f'test/{k}': test[k] for k in task.headline if k in test})
    task.write_outputs(run_dir, test, test_outputs, split.test)
    write_run_report(run_dir)
    writer.close()
    _print_summary(final, run_dir, config, time.perf_counter() - began)
  return final


FETCH_EVERY = 25  # training steps between reads of the metrics (progress bar, non-finite check)


def _device_totals(sums: dict, per_dispatch: int) -> dict:
  """Running sums of the training metrics, kept on the device, from a (resumed) host record; room
  for the losses of every step between two fetches (at most FETCH_EVERY - 1 + one dispatch)."""
  return {'sums': {k: jnp.asarray(v, jnp.float32) for k, v in sums.items()},
          'first_nonfinite': jnp.asarray(-1, jnp.int32), 'loss_then': jnp.asarray(0.0, jnp.float32),
          'losses': jnp.zeros(FETCH_EVERY - 1 + per_dispatch, jnp.float32)}


@jax.jit
def _accumulate(totals: dict, metrics: dict, before: int) -> dict:
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


def _dispatch_rows(order: np.ndarray, first: int, count: int, batch_size: int) -> np.ndarray:
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


def _fetched_sums(totals: dict, epoch: int, run_dir: Path, checkpoints: Checkpoints, writer, offset: int,
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
                         f'the last finite checkpoint is kept in {run_dir}; lower --learning-rate and start again')
  return {k: float(v) for k, v in fetched['sums'].items()}


def _select(checkpoints: Checkpoints, state, position: dict, metric: str, epochs: int):
  """(state, record) of the checkpoint validation picked: the best one, or the last when every
  validation score was undefined (NaN never wins)."""
  if position['best'] is None:
    step = int(jax.device_get(state.step))
    return state, {'epoch': epochs, 'metric': f'validation {metric}', 'value': None, 'checkpoint': f'last/{step}',
                   'note': f'validation {metric} was undefined in every epoch: the last checkpoint is used'}
  selected, _ = checkpoints.restore(state, which='best')
  step = int(jax.device_get(selected.step))
  return selected, {'epoch': position['best_epoch'], 'metric': f'validation {metric}',
                    'value': position['best'], 'checkpoint': f'best/{step}'}


def _print_summary(final: dict, run_dir: Path, config: Config, seconds: float) -> None:
  """The run's closing lines: test metrics with intervals, the selected epoch, wall time, where the
  outputs are, and the commands to paste next."""
  selection = final['selected_checkpoint']
  keys = ('accuracy', 'balanced_accuracy', 'roc_auc') if final['task'] == 'classify' else (
      'dice_per_volume', 'false_positive_rate')

  def shown(metrics: dict) -> str:
    intervals = metrics.get('confidence_95') or {}
    return ', '.join(f'{k} {metrics[k]:.3f}' + (' [{:.3f}, {:.3f}]'.format(*intervals[k]) if k in intervals else '')
                     for k in keys if metrics.get(k) is not None)

  print(f'test ({final["counts"]["test_patients"]} patients, used for no choice): {shown(final)}'
        + (f'; 95% intervals {final["confidence_95_note"]}' if final.get('confidence_95_note') else ''), flush=True)
  for key, how in (('native', 'as the model gives them'), ('native_postprocessed', 'post-processed as validation chose')):
    if key in final:
      print(f'  at 256x256, masks {how}: {shown(final[key])}', flush=True)
  runs = f'--run {run_dir}' if final['task'] == 'classify' else f'--run CLASSIFIER_RUN --seg-run {run_dir}'
  print(f'selected checkpoint: epoch {selection["epoch"]} by {selection["metric"]}; {seconds / 60:.1f} min in all; '
        f'outputs in {run_dir} (open {run_dir / "report.html"} in a browser)\nnext:\n  jaxbrain predict PATIENT_FOLDER... {runs} --out predictions/\n'
        f'  tensorboard --logdir {run_dir / "tensorboard"}\n  python -m experiments.report --workdir {config.workdir}',
        flush=True)
