"""What differs between classification and segmentation, as data the one runner consumes.

A `Task` bundles the model, its initial variables, the pure train/eval steps, how to gather a
batch's inputs and targets, and how to turn the eval split's outputs into metrics and files.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbrain.data import Preprocess, SliceArrays, Split
from jaxbrain.data.transforms import preprocess as preprocess_images, resize
from jaxbrain.errors import ConfigError
from jaxbrain.metrics import (CLASSIFICATION_KEYS, DECISION_THRESHOLD, SEGMENTATION_KEYS, classification_metrics,
                              patient_intervals, segmentation_counts, segmentation_metrics_from_counts)
from jaxbrain.models import (cached_torchvision_weights, create_model, create_segmenter, find_weights, load_torchvision_weights,
                             with_pretrained_backbone)
from jaxbrain.train.config import TrainConfig
from jaxbrain.localize.gradcam import gradcam, pointing_game
from jaxbrain.train.outputs import plot_classification, save_heatmaps, save_overlays, write_csv
from jaxbrain.train.steps import (make_eval_step, make_head_eval_step, make_head_train_step,
                                  make_segmentation_eval_step, make_segmentation_train_step, make_train_step)
from jaxbrain.train.strategies import cache_features, make_optimizer



@dataclasses.dataclass
class Task:
  model: Any
  variables: dict
  init_description: str
  tx: optax.GradientTransformation
  train_step: Callable  # pure (state, batch) -> (state, metrics)
  eval_step: Callable  # pure (state, batch) -> per-example outputs ({'probability': [B], ...})
  inputs: Callable[[str, np.ndarray], dict]  # ('train' | 'eval', dataset indices) -> model inputs
  targets: Callable[[np.ndarray], dict]  # dataset indices -> training targets
  metrics: Callable[[dict, np.ndarray], dict]  # (eval outputs, their dataset indices) -> metrics
  selection: str  # validation metric that picks the checkpoint (higher is better)
  headline: tuple[str, ...]  # metrics logged every epoch
  final_metrics: Callable[[dict, np.ndarray, Any], dict]  # (test outputs, test indices, selected state) -> metrics
  write_outputs: Callable[[Path, dict, dict, np.ndarray], None]  # run dir, test metrics, test outputs, indices
  extras: dict = dataclasses.field(default_factory=dict)  # facts for config.json


PREDICTION_COLUMNS = ('path', 'patient', 'slice', 'probability', 'label', 'truth')


def write_test_predictions(path: Path, data: SliceArrays, indices: np.ndarray, outputs: dict,
                           threshold: float = DECISION_THRESHOLD) -> None:
  """test_predictions.csv: one row per test slice (path relative to kaggle_3m, patient, slice,
  probability, predicted label, true label, and tumor_pixels at 256x256 for segmentation runs)."""
  rows = []
  for k, i in enumerate(indices):
    row = {'path': data.path[i], 'patient': data.patient[i], 'slice': int(data.slice[i]),
           'probability': repr(float(outputs['probability'][k])),
           'label': int(outputs['probability'][k] >= threshold), 'truth': int(data.label[i])}
    if 'tumor_pixels' in outputs:
      row['tumor_pixels'] = int(outputs['tumor_pixels'][k])
    rows.append(row)
  write_csv(path, rows, PREDICTION_COLUMNS)


def _pretrained(config: TrainConfig, variables: dict) -> tuple[dict, str]:
  """Puts the ImageNet ResNet backbone into `variables`; never fakes it (fails with instructions)."""
  path = find_weights(config.arch, config.weights)
  if jax.process_count() > 1:  # the orbax cache is a single-process convenience; every process converts
    pretrained = load_torchvision_weights(config.arch, path)
  else:
    pretrained = cached_torchvision_weights(config.arch, path, Path(config.workdir) / 'pretrained')
  return with_pretrained_backbone(variables, pretrained), f'imagenet ({path})'


def _initialize(config: TrainConfig, model) -> tuple[dict, str]:
  dummy = jnp.zeros((1, config.image_size, config.image_size, 3))
  variables = jax.jit(functools.partial(model.init, train=False))({'params': jax.random.key(config.seed)}, dummy)
  if config.init == 'scratch':
    return variables, 'scratch (random initialization, not ImageNet-pretrained)'
  return _pretrained(config, variables)


def _optimizer(config: TrainConfig, variables: dict, steps_per_epoch: int) -> optax.GradientTransformation:
  strategy = config.strategy if config.task == 'classify' else 'finetune'
  return make_optimizer(variables['params'], strategy, config.learning_rate, config.momentum, config.optimizer,
                        config.lr_schedule, steps_per_epoch * config.epochs, config.weight_decay)


def classification_task(config: TrainConfig, data: SliceArrays, split: Split, progress: bool) -> Task:
  model = create_model(config.arch, num_classes=2, head_hidden=config.head_hidden, dropout_rate=config.dropout_rate,
                       dtype=jnp.dtype(config.compute_dtype))
  variables, init_description = _initialize(config, model)
  tx = _optimizer(config, variables, len(split.train) // config.batch_size)
  preprocess = Preprocess.from_name(config.preprocess, config.image_size)
  frozen = config.strategy == 'feature_extractor'
  use_cache = frozen and config.feature_cache and config.frozen_bn == 'running'
  if frozen and config.feature_cache and not use_cache and progress:
    print('feature cache off: --frozen-bn batch computes new BatchNorm statistics every step, which the cache '
          '(features computed once, with running statistics) cannot replay', flush=True)
  if use_cache and preprocess.affine:
    raise ConfigError(f'the feature cache replays flips only, not the scale/rotation of {config.preprocess!r}: '
                     'pass --no-feature-cache, or a preprocessing without _affine')

  if use_cache:
    features_fn = functools.partial(jax.jit(lambda v, x: model.apply(v, x, method='features')), variables)
    cache = functools.partial(cache_features, features_fn, data, config=preprocess, batch_size=config.batch_size,
                              progress=progress)
    cached = {'train': split.train, 'eval': np.union1d(split.validation, split.test)}
    features = {'train': cache(indices=cached['train'], with_flipped=preprocess.flip),
                'eval': cache(indices=cached['eval'], with_flipped=False)}
    inputs = lambda part, idx: {'features': features[part][np.searchsorted(cached[part], idx)]}
    train_step, eval_step = make_head_train_step(model, tx), make_head_eval_step(model)
  else:
    inputs = lambda part, idx: {'image': data.image[idx]}
    train_step = make_train_step(model, tx, preprocess, frozen, config.frozen_bn)
    eval_step = make_eval_step(model, preprocess)

  def metrics(outputs, indices):
    return classification_metrics(data.label[indices], outputs['probability'])

  heatmaps = {}

  def final_metrics(outputs, indices, state):
    labels, probabilities = data.label[indices], outputs['probability']
    final = classification_metrics(labels, probabilities)
    final.update(patient_intervals(lambda rows, groups: classification_metrics(labels[rows], probabilities[rows]),
                                   data.patient[indices], config.bootstrap_samples, config.seed))
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    cam = jax.jit(lambda x: gradcam(model, variables, preprocess_images(preprocess, None, x)[0]))
    tumor_slices = indices[labels == 1]
    heatmaps['tumor'] = np.concatenate([np.asarray(cam(data.image[tumor_slices[s:s + config.batch_size]]))
                                        for s in range(0, len(tumor_slices), config.batch_size)] or [np.zeros((0, 1, 1))])
    heatmaps['indices'] = tumor_slices
    final['gradcam_pointing_game'] = pointing_game(heatmaps['tumor'], data.mask[tumor_slices])
    return final

  def write_outputs(run_dir, final, outputs, indices):
    write_test_predictions(run_dir / 'test_predictions.csv', data, indices, outputs)
    plot_classification(run_dir, final, data.label[indices], outputs['probability'])
    tumor_slices = heatmaps['indices']
    save_heatmaps(run_dir / 'gradcam', data.image[tumor_slices], heatmaps['tumor'], data.mask[tumor_slices],
                  [f'{p}_{s}' for p, s in zip(data.patient[tumor_slices], data.slice[tumor_slices])])

  return Task(model, variables, init_description, tx, train_step, eval_step, inputs,
              targets=lambda idx: {'label': data.label[idx]}, metrics=metrics, selection='roc_auc',
              headline=CLASSIFICATION_KEYS, final_metrics=final_metrics, write_outputs=write_outputs,
              extras={'feature_cache': use_cache})


def segmentation_task(config: TrainConfig, data: SliceArrays, split: Split, progress: bool) -> Task:
  model = create_segmenter('residual' if config.arch == 'resunet' else config.arch, config.unet_width)
  if config.arch == 'resunet' and config.init == 'imagenet':
    raise ConfigError('the ResUNet residual encoder has no ImageNet weights: pass --init scratch, or --arch '
                     'resnet18/resnet50 for a ResNet encoder')
  variables, init_description = _initialize(config, model)
  tx = _optimizer(config, variables, len(split.train) // config.batch_size)
  preprocess = Preprocess.from_name(config.preprocess, config.image_size)

  resized = {}

  def true_masks(indices):  # at the model's resolution, where the metrics are computed; once per side
    key = np.asarray(indices).tobytes()
    if key not in resized:
      masks = resize(jnp.asarray(data.mask[indices, :, :, None]), config.image_size, 'nearest')[..., 0]
      resized[key] = np.asarray(masks).astype(bool)
    return resized[key]

  def counts(outputs, indices):
    return segmentation_counts(outputs['mask_probability'] > 0.5, true_masks(indices))

  def metrics(outputs, indices):
    return segmentation_metrics_from_counts(counts(outputs, indices), data.patient[indices])

  def final_metrics(outputs, indices, state):
    per_slice = counts(outputs, indices)
    final = segmentation_metrics_from_counts(per_slice, data.patient[indices])
    resampled = lambda rows, groups: segmentation_metrics_from_counts({k: v[rows] for k, v in per_slice.items()},
                                                                      groups)
    final.update(patient_intervals(resampled, data.patient[indices], config.bootstrap_samples, config.seed))
    return final

  def write_outputs(run_dir, final, outputs, indices):
    write_test_predictions(run_dir / 'test_predictions.csv', data, indices, outputs)
    save_overlays(run_dir / 'overlays', data.image[indices], outputs['mask_probability'] > 0.5, true_masks(indices),
                  [f'{p}_{s}' for p, s in zip(data.patient[indices], data.slice[indices])])

  return Task(model, variables, init_description, tx, make_segmentation_train_step(model, tx, preprocess),
              make_segmentation_eval_step(model, preprocess), inputs=lambda part, idx: {'image': data.image[idx]},
              targets=lambda idx: {'mask': data.mask[idx]}, metrics=metrics, selection='dice_per_volume',
              headline=SEGMENTATION_KEYS, final_metrics=final_metrics, write_outputs=write_outputs)


def build_task(config: TrainConfig, data: SliceArrays, split: Split, progress: bool = False) -> Task:
  builder = {'classify': classification_task, 'segment': segmentation_task}[config.task]
  return builder(config, data, split, progress)
