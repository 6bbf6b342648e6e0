"""The one classification runner: `train_and_evaluate(config)`.

files -> validated examples -> split -> host batches -> sharded jitted step -> metrics, checkpoints
and plots in `workdir/<experiment>/<run>/`. Side effects (files, signals, progress bars) live
here; everything it calls is pure.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxbrain.data import Preprocess, SliceArrays, check_batch_size, load_dataset, make_split, write_phantom
from jaxbrain.data.batching import eval_index_batches, train_index_batches
from jaxbrain.data.builder import default_data_dir
from jaxbrain.metrics import CLASSIFICATION_KEYS, bootstrap_by_patient, classification_metrics
from jaxbrain.models import cached_torchvision_weights, create_model, find_weights, with_pretrained_backbone
from jaxbrain.train import sharding
from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.train.config import TrainConfig
from jaxbrain.train.outputs import RunWriter, plot_run, read_history, write_json
from jaxbrain.train.state import create_train_state
from jaxbrain.train.steps import make_eval_step, make_head_eval_step, make_head_train_step, make_train_step
from jaxbrain.train.strategies import cache_features, make_optimizer


class RunExistsError(FileExistsError):
  """The run directory already holds a run; resume it or overwrite it explicitly."""


class Interrupted(KeyboardInterrupt):
  """SIGTERM/SIGINT arrived; the state was checkpointed before raising."""


def prepare_data(config: TrainConfig) -> tuple[SliceArrays, str]:
  """Loads `config.data_dir`, or the embedded phantom dataset (generated once) when it is None."""
  cache_root = Path(config.workdir) / 'tfds'
  if config.data_dir:
    root = Path(config.data_dir)
    source = f'kaggle_3m at {root.resolve()}'
  else:
    root = Path(config.workdir) / 'phantom' / f'{config.phantom_patients}p-seed0' / 'kaggle_3m'
    if not root.exists():
      write_phantom(root, n_patients=config.phantom_patients, seed=0)
    source = f'phantom (synthetic, {config.phantom_patients} patients) at {root.resolve()}'
  return load_dataset(root, default_data_dir(root, cache_root)), source


def init_variables(config: TrainConfig, model, rng: jax.Array) -> tuple[dict, str]:
  """Fresh variables, with the ImageNet backbone when `config.init == 'imagenet'` (never faked)."""
  dummy = jnp.zeros((1, config.image_size, config.image_size, 3))
  variables = jax.jit(functools.partial(model.init, train=False))({'params': rng}, dummy)
  if config.init == 'scratch':
    return variables, 'scratch (random initialization, not ImageNet-pretrained)'
  path = find_weights(config.arch, config.weights)
  pretrained = cached_torchvision_weights(config.arch, path, Path(config.workdir) / 'pretrained')
  return with_pretrained_backbone(variables, pretrained), f'imagenet ({path})'


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
  """Trains `config`, evaluates every epoch, and returns the final metrics (also in metrics.json)."""
  is_writer = jax.process_index() == 0
  run_dir = Path(config.workdir) / config.experiment / config.resolved_run_name
  data, source = prepare_data(config)
  split = make_split(config.split, data.patient, data.label, eval_fraction=config.eval_fraction,
                     fold=config.fold, seed=config.seed)
  model = create_model(config.arch, num_classes=2, head_hidden=config.head_hidden, dropout_rate=config.dropout_rate)
  variables, init_description = init_variables(config, model, jax.random.key(config.seed))
  if is_writer:
    _prepare_run_dir(run_dir, resume, overwrite)
  mesh = sharding.make_mesh()
  check_batch_size(config.batch_size, mesh.size)
  tx = make_optimizer(variables['params'], config.strategy, config.learning_rate, config.momentum)
  state = sharding.replicate(create_train_state(variables, tx, config.seed), mesh)
  preprocess = Preprocess.from_name(config.preprocess, config.image_size)
  frozen = config.strategy == 'feature_extractor'
  use_cache = frozen and config.feature_cache

  if use_cache:
    features_fn = functools.partial(jax.jit(lambda v, x: model.apply(v, x, method='features')), variables)
    cache = functools.partial(cache_features, features_fn, data, config=preprocess, batch_size=config.batch_size,
                              progress=progress and is_writer)
    inputs = {'train': cache(indices=split.train, with_flipped=preprocess.flip),
              'eval': cache(indices=split.eval, with_flipped=False)}
    rows = {part: {int(i): r for r, i in enumerate(getattr(split, part))} for part in ('train', 'eval')}
    gather = lambda part, idx: {'features': inputs[part][[rows[part][int(i)] for i in idx]]}
    train_step = make_head_train_step(model, tx)
    eval_step = make_head_eval_step(model)
    input_keys = ('features',)
  else:
    gather = lambda part, idx: {'image': data.image[idx]}
    train_step = make_train_step(model, tx, preprocess, frozen)
    eval_step = make_eval_step(model, preprocess)
    input_keys = ('image',)
  train_step = sharding.jit_train_step(train_step, mesh)
  eval_step = sharding.jit_eval_step(eval_step, mesh)

  def evaluate(state) -> np.ndarray:
    probabilities = []
    for idx, valid in eval_index_batches(split.eval, config.batch_size):
      batch = sharding.shard_batch(gather('eval', idx), mesh, input_keys)
      probabilities.append(sharding.to_host(eval_step(state, batch)['probability'])[valid])
    return np.concatenate(probabilities)

  checkpoints = Checkpoints(run_dir, config.keep_checkpoints)
  progress_record = {'epoch': 0, 'batch': 0, 'best_roc_auc': None, 'loss_sum': 0.0, 'correct': 0.0}
  if resume and checkpoints.latest_step() is not None:
    state, progress_record = checkpoints.restore(state)
    print(f'resumed {run_dir} at epoch {progress_record["epoch"]}, batch {progress_record["batch"]}')
  counts = {'train_slices': len(split.train), 'eval_slices': len(split.eval),
            'train_patients': len(set(data.patient[split.train])), 'eval_patients': len(set(data.patient[split.eval])),
            'eval_tumor_slices': int(data.label[split.eval].sum()), 'devices': mesh.size}
  header = {'config': dataclasses.asdict(config), 'init': init_description, 'data': source, 'counts': counts,
            'feature_cache': use_cache}
  writer = None
  if is_writer:
    write_json(run_dir / 'config.json', header)
    writer = RunWriter(run_dir)
    print(f'{config.experiment}: {config.arch} {config.strategy}, {config.preprocess} {config.image_size}px; '
          f'init {init_description}; data {source}; {config.split} split: {counts["train_slices"]} train / '
          f'{counts["eval_slices"]} eval slices; {mesh.size} device(s); run dir {run_dir}')

  labels = data.label[split.eval]
  steps_per_epoch = len(split.train) // config.batch_size
  with _StopFlag() as stop:
    for epoch in range(progress_record['epoch'], config.epochs):
      start = progress_record['batch']
      loss_sum, correct = progress_record['loss_sum'], progress_record['correct']
      bar = tqdm(train_index_batches(split.train, config.batch_size, config.seed, epoch, start),
                 total=steps_per_epoch, initial=start, desc=f'epoch {epoch + 1}/{config.epochs}',
                 unit='batch', disable=not (progress and is_writer), leave=False)
      for b, idx in enumerate(bar, start=start):
        batch = gather('train', idx)
        batch['label'] = data.label[idx]
        state, metrics = train_step(state, sharding.shard_batch(batch, mesh, input_keys + ('label',)))
        metrics = jax.device_get(metrics)
        loss_sum += float(metrics['loss'])
        correct += float(metrics['accuracy']) * config.batch_size
        bar.set_postfix(loss=f'{loss_sum / (b + 1):.4f}', acc=f'{correct / ((b + 1) * config.batch_size):.3f}')
        if stop.signal is not None:
          checkpoints.save(state, {**progress_record, 'epoch': epoch, 'batch': b + 1, 'loss_sum': loss_sum,
                                   'correct': correct})
          checkpoints.close()
          raise Interrupted(f'stopped by signal {stop.signal} at epoch {epoch + 1}, batch {b + 1}; '
                            f'checkpoint saved in {run_dir}; continue with --resume')
      bar.close()
      probabilities = evaluate(state)
      metrics = classification_metrics(labels, probabilities)
      best = progress_record['best_roc_auc']
      improved = not math.isnan(metrics['roc_auc']) and (best is None or metrics['roc_auc'] > best)
      progress_record = {'epoch': epoch + 1, 'batch': 0, 'loss_sum': 0.0, 'correct': 0.0,
                         'best_roc_auc': metrics['roc_auc'] if improved else best}
      if is_writer:
        record = {'epoch': epoch, 'step': int(jax.device_get(state.step)),
                  'train_loss': loss_sum / max(steps_per_epoch, 1),
                  'train_accuracy': correct / max(steps_per_epoch * config.batch_size, 1),
                  **{f'eval_{k}': metrics[k] for k in CLASSIFICATION_KEYS}}
        writer.epoch(record, keep_epochs_below=epoch)
        print(f'epoch {epoch + 1}/{config.epochs}: loss {record["train_loss"]:.4f}, train acc '
              f'{record["train_accuracy"]:.3f}, eval acc {metrics["accuracy"]:.3f}, ROC AUC {metrics["roc_auc"]:.3f}')
      checkpoints.save(state, progress_record, best=improved)

  probabilities = evaluate(state)
  final = classification_metrics(labels, probabilities)
  if config.split == 'patient' and config.bootstrap_samples:
    final['confidence_95'] = bootstrap_by_patient(labels, probabilities, data.patient[split.eval],
                                                  samples=config.bootstrap_samples, seed=config.seed)
  final.update({'split': config.split, 'fold': config.fold, 'init': init_description, 'data': source,
                'counts': counts, 'epochs': config.epochs, 'experiment': config.experiment, 'arch': config.arch,
                'strategy': config.strategy, 'preprocess': config.preprocess, 'image_size': config.image_size})
  checkpoints.close()
  if is_writer:
    write_json(run_dir / 'metrics.json', final)
    np.savez(run_dir / 'eval_predictions.npz', index=split.eval, label=labels, probability=probabilities,
             patient=data.patient[split.eval])
    plot_run(run_dir, read_history(run_dir), final, labels, probabilities)
    writer.close()
  return final

