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
from jaxbrain.metrics import CLASSIFICATION_KEYS, bootstrap_by_patient, classification_metrics, segmentation_metrics
from jaxbrain.models import (cached_torchvision_weights, create_model, find_weights, load_torchvision_weights,
                             with_pretrained_backbone)
from jaxbrain.models.resunet import ResUNet
from jaxbrain.train.config import TrainConfig
from jaxbrain.localize.gradcam import gradcam, pointing_game
from jaxbrain.train.outputs import plot_classification, save_heatmaps, save_overlays
from jaxbrain.train.steps import (make_eval_step, make_head_eval_step, make_head_train_step,
                                  make_segmentation_eval_step, make_segmentation_train_step, make_train_step)
from jaxbrain.train.strategies import cache_features, make_optimizer

SEGMENTATION_KEYS = ('dice_per_volume', 'iou_per_volume', 'dice_tumor_slices', 'false_positive_rate',
                     'tumor_detection_rate')


@dataclasses.dataclass
class Task:
  model: Any
  variables: dict
  init_description: str
  tx: optax.GradientTransformation
  train_step: Callable  # pure (state, batch) -> (state, metrics)
  eval_step: Callable  # pure (state, batch) -> {output_key: per-example outputs}
  inputs: Callable[[str, np.ndarray], dict]  # ('train' | 'eval', dataset indices) -> model inputs
  targets: Callable[[np.ndarray], dict]  # dataset indices -> training targets
  output_key: str
  metrics: Callable[[np.ndarray], dict]  # eval outputs, in split.eval order -> metrics
  selection: str  # metric that picks the best checkpoint (higher is better)
  headline: tuple[str, ...]  # metrics logged every epoch
  final_metrics: Callable[[np.ndarray, Any], dict]  # (eval outputs, final train state) -> metrics
  write_outputs: Callable[[Path, dict, np.ndarray], None]  # run dir, final metrics, eval outputs
  extras: dict = dataclasses.field(default_factory=dict)  # facts for config.json


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
  labels = data.label[split.eval]
  patients = data.patient[split.eval]

  if frozen and config.feature_cache:
    features_fn = functools.partial(jax.jit(lambda v, x: model.apply(v, x, method='features')), variables)
    cache = functools.partial(cache_features, features_fn, data, config=preprocess, batch_size=config.batch_size,
                              progress=progress)
    features = {'train': cache(indices=split.train, with_flipped=preprocess.flip),
                'eval': cache(indices=split.eval, with_flipped=False)}
    rows = {part: np.searchsorted(getattr(split, part), np.arange(len(data))) for part in ('train', 'eval')}
    inputs = lambda part, idx: {'features': features[part][rows[part][idx]]}
    train_step, eval_step = make_head_train_step(model, tx), make_head_eval_step(model)
  else:
    inputs = lambda part, idx: {'image': data.image[idx]}
    train_step, eval_step = make_train_step(model, tx, preprocess, frozen), make_eval_step(model, preprocess)

  tumor_slices = split.eval[labels == 1]
  heatmaps = {}

  def final_metrics(probabilities, state):
    final = classification_metrics(labels, probabilities)
    if config.split == 'patient' and config.bootstrap_samples:
      final['confidence_95'] = bootstrap_by_patient(labels, probabilities, patients, samples=config.bootstrap_samples,
                                                    seed=config.seed)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    cam = jax.jit(lambda x: gradcam(model, variables, preprocess_images(preprocess, None, x)[0]))
    heatmaps['tumor'] = np.concatenate([np.asarray(cam(data.image[tumor_slices[s:s + config.batch_size]]))
                                        for s in range(0, len(tumor_slices), config.batch_size)] or [np.zeros((0, 1, 1))])
    final['gradcam_pointing_game'] = pointing_game(heatmaps['tumor'], data.mask[tumor_slices])
    return final

  def write_outputs(run_dir, final, probabilities):
    np.savez(run_dir / 'eval_predictions.npz', index=split.eval, label=labels, probability=probabilities,
             patient=patients)
    plot_classification(run_dir, final, labels, probabilities)
    save_heatmaps(run_dir / 'gradcam', data.image[tumor_slices], heatmaps['tumor'], data.mask[tumor_slices],
                  [f'{p}_{s}' for p, s in zip(data.patient[tumor_slices], data.slice[tumor_slices])])

  return Task(model, variables, init_description, tx, train_step, eval_step, inputs,
              targets=lambda idx: {'label': data.label[idx]}, output_key='probability',
              metrics=lambda p: classification_metrics(labels, p), selection='roc_auc', headline=CLASSIFICATION_KEYS,
              final_metrics=final_metrics, write_outputs=write_outputs,
              extras={'feature_cache': frozen and config.feature_cache})


def segmentation_task(config: TrainConfig, data: SliceArrays, split: Split, progress: bool) -> Task:
  model = ResUNet(width=config.unet_width, encoder='residual' if config.arch == 'resunet' else config.arch)
  if config.arch == 'resunet' and config.init == 'imagenet':
    raise ValueError('the ResUNet residual encoder has no ImageNet weights: pass --init scratch, or --arch '
                     'resnet18/resnet50 for a ResNet encoder')
  variables, init_description = _initialize(config, model)
  tx = _optimizer(config, variables, len(split.train) // config.batch_size)
  preprocess = Preprocess.from_name(config.preprocess, config.image_size)
  size = config.image_size
  true = np.asarray(resize(jnp.asarray(data.mask[split.eval, :, :, None]), size, 'nearest')[..., 0]).astype(bool)
  patients = data.patient[split.eval]

  def metrics(probabilities):
    return segmentation_metrics(probabilities > 0.5, true, patients)

  def write_outputs(run_dir, final, probabilities):
    np.savez_compressed(run_dir / 'eval_predictions.npz', index=split.eval, patient=patients,
                        predicted=probabilities > 0.5, true=true)
    save_overlays(run_dir / 'overlays', data.image[split.eval], probabilities > 0.5, true,
                  [f'{p}_{s}' for p, s in zip(patients, data.slice[split.eval])])

  return Task(model, variables, init_description, tx, make_segmentation_train_step(model, tx, preprocess),
              make_segmentation_eval_step(model, preprocess), inputs=lambda part, idx: {'image': data.image[idx]},
              targets=lambda idx: {'mask': data.mask[idx]}, output_key='mask_probability', metrics=metrics,
              selection='dice_per_volume', headline=SEGMENTATION_KEYS,
              final_metrics=lambda probabilities, state: metrics(probabilities),
              write_outputs=write_outputs)


def build_task(config: TrainConfig, data: SliceArrays, split: Split, progress: bool = False) -> Task:
  builder = {'classify': classification_task, 'segment': segmentation_task}[config.task]
  return builder(config, data, split, progress)
