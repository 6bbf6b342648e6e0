"""The one runner, for classification and segmentation: `train_and_evaluate(config)`.

files -> validated examples -> split -> host batches -> sharded jitted step -> metrics, checkpoints
and plots in `workdir/<experiment>/<run>/`. Side effects (files, signals, progress bars) live
here; everything it calls is pure.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jaxbrain.data import SliceArrays, check_batch_size, make_split, write_phantom
from jaxbrain.data.batching import eval_index_batches, train_index_batches
from jaxbrain.train import sharding
from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.train.config import TrainConfig
from jaxbrain.train.outputs import RunWriter, plot_curves, read_history, write_json
from jaxbrain.train.state import create_train_state
from jaxbrain.train.tasks import build_task


class RunExistsError(FileExistsError):
  """The run directory already holds a run; resume it or overwrite it explicitly."""


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


def prepare_data(config: TrainConfig) -> tuple[SliceArrays, str]:
  """Loads `config.data_dir`, or the embedded phantom dataset (generated once) when it is None."""
  return _process0_first(lambda: _load(config))


def _load(config: TrainConfig) -> tuple[SliceArrays, str]:
  from jaxbrain.data import builder  # tensorflow_datasets only for runs that load data (jaxbrain.data)
  cache_root = Path(config.workdir) / 'tfds'
  if config.data_dir:
    root = Path(config.data_dir)
    source = f'kaggle_3m at {root.resolve()}'
  else:
    root = Path(config.workdir) / 'phantom' / f'{config.phantom_patients}p-seed0' / 'kaggle_3m'
    if not root.exists():
      write_phantom(root, n_patients=config.phantom_patients, seed=0)
    source = f'phantom (synthetic, {config.phantom_patients} patients) at {root.resolve()}'
  return builder.load_dataset(root, builder.default_data_dir(root, cache_root)), source


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


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
  if run_dir.exists() and any(run_dir.iterdir()) and not resume:
    if not overwrite:
      raise RunExistsError(f'{run_dir} already holds a run: pass --resume to continue it, --overwrite to '
                           'start it over, or --run-name NAME for a new one')
    shutil.rmtree(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)


def train_and_evaluate(config: TrainConfig, resume: bool = False, overwrite: bool = False,
                       progress: bool = True) -> dict:
  """Trains `config` (classification or segmentation), evaluates every epoch, and returns the final
  metrics (also written to metrics.json)."""
  is_writer = jax.process_index() == 0
  run_dir = Path(config.workdir) / config.experiment / config.resolved_run_name
  data, source = prepare_data(config)
  split = make_split(config.split, data.patient, data.label, eval_fraction=config.eval_fraction,
                     fold=config.fold, seed=config.seed)
  task = build_task(config, data, split, progress=progress and is_writer)
  if is_writer:
    _prepare_run_dir(run_dir, resume, overwrite)
  mesh = sharding.make_mesh()
  check_batch_size(config.batch_size, mesh.size)
  state = sharding.replicate(create_train_state(task.variables, task.tx, config.seed), mesh)
  train_step = sharding.jit_train_step(task.train_step, mesh)
  eval_step = sharding.jit_eval_step(task.eval_step, mesh)

  def evaluate(state) -> np.ndarray:
    outputs = []
    for idx, valid in eval_index_batches(split.eval, config.batch_size):
      inputs = task.inputs('eval', idx)
      outputs.append(sharding.to_host(eval_step(state, sharding.shard_batch(inputs, mesh, tuple(inputs))))
                     [task.output_key][valid])
    return np.concatenate(outputs)

  checkpoints = Checkpoints(run_dir, config.keep_checkpoints)
  progress_record = {'epoch': 0, 'batch': 0, 'best': None, 'sums': {}}
  if resume and checkpoints.latest_step() is not None:
    state, progress_record = checkpoints.restore(state)
    print(f'resumed {run_dir} at epoch {progress_record["epoch"] + 1}, batch {progress_record["batch"]}')
  counts = {'train_slices': len(split.train), 'eval_slices': len(split.eval),
            'train_patients': len(set(data.patient[split.train])), 'eval_patients': len(set(data.patient[split.eval])),
            'eval_tumor_slices': int(data.label[split.eval].sum()), 'devices': mesh.size}
  writer = None
  if is_writer:
    write_json(run_dir / 'config.json', {'config': dataclasses.asdict(config), 'init': task.init_description,
                                         'data': source, 'counts': counts, **task.extras})
    writer = RunWriter(run_dir)
    what = config.strategy if config.task == 'classify' else 'segmentation'
    print(f'{config.experiment}: {config.arch} {what}, {config.preprocess} {config.image_size}px; '
          f'init {task.init_description}; data {source}; {config.split} split: {counts["train_slices"]} train / '
          f'{counts["eval_slices"]} eval slices; {mesh.size} device(s); run dir {run_dir}', flush=True)

  steps_per_epoch = len(split.train) // config.batch_size
  with _StopFlag() as stop:
    for epoch in range(progress_record['epoch'], config.epochs):
      start = progress_record['batch']
      sums = dict(progress_record['sums'])
      bar = tqdm(train_index_batches(split.train, config.batch_size, config.seed, epoch, start),
                 total=steps_per_epoch, initial=start, desc=f'epoch {epoch + 1}/{config.epochs}',
                 unit='batch', disable=not (progress and is_writer), leave=False)
      for b, idx in enumerate(bar, start=start):
        batch = {**task.inputs('train', idx), **task.targets(idx)}
        state, metrics = train_step(state, sharding.shard_batch(batch, mesh, tuple(batch)))
        for name, value in jax.device_get(metrics).items():
          sums[name] = sums.get(name, 0.0) + float(value)
        bar.set_postfix({name: f'{total / (b + 1):.4f}' for name, total in sums.items()})
        if stop.signal is not None:
          checkpoints.save(state, {**progress_record, 'epoch': epoch, 'batch': b + 1, 'sums': sums})
          checkpoints.close()
          raise Interrupted(f'stopped by signal {stop.signal} at epoch {epoch + 1}, batch {b + 1}; '
                            f'checkpoint saved in {run_dir}; continue with --resume')
      bar.close()
      metrics = task.metrics(evaluate(state))
      score, best = metrics[task.selection], progress_record['best']
      improved = not math.isnan(score) and (best is None or score > best)
      progress_record = {'epoch': epoch + 1, 'batch': 0, 'best': score if improved else best, 'sums': {}}
      if is_writer:
        record = {'epoch': epoch, 'step': int(jax.device_get(state.step)),
                  **{f'train_{name}': total / max(steps_per_epoch, 1) for name, total in sums.items()},
                  **{f'eval_{k}': metrics[k] for k in task.headline}}
        writer.epoch(record, keep_epochs_below=epoch)
        shown = ', '.join(f'{k} {v:.4f}' for k, v in record.items() if k.startswith(('train_', 'eval_')) and
                          isinstance(v, float) and not k.startswith(('eval_precision', 'eval_f1', 'eval_iou')))
        print(f'epoch {epoch + 1}/{config.epochs}: {shown}', flush=True)
      checkpoints.save(state, progress_record, best=improved)

  outputs = evaluate(state)
  final = task.final_metrics(outputs, state)
  final.update({'task': config.task, 'split': config.split, 'fold': config.fold, 'init': task.init_description,
                'data': source, 'counts': counts, 'epochs': config.epochs, 'experiment': config.experiment,
                'arch': config.arch, 'strategy': config.strategy, 'preprocess': config.preprocess,
                'image_size': config.image_size})
  checkpoints.close()
  if is_writer:
    write_json(run_dir / 'metrics.json', final)
    plot_curves(run_dir, read_history(run_dir), tuple(task.headline[:3]))
    task.write_outputs(run_dir, final, outputs)
    writer.close()
  return final
