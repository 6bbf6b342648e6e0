"""What differs between classification and segmentation, as two small classes the one runner drives.

A task owns its model, initial variables and optimizer, its pure train/eval steps, how to gather a
batch's inputs and targets from the dataset, its metrics, and the files it leaves in the run
directory. The runner calls only the `Task` protocol; evaluators named in the config (Grad-CAM,
overlays: `jaxbrain/evaluators`) add to the test metrics and files.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbrain import models
from jaxbrain.config import Config
from jaxbrain.data import SliceArrays, Split
from jaxbrain.data.arrays import segmenter_inputs
from jaxbrain.data.batching import epoch_length
from jaxbrain.data.transforms import Preprocessing, resize
from jaxbrain.errors import ConfigError
from jaxbrain.metrics import (CLASSIFICATION_KEYS, DECISION_THRESHOLD, SEGMENTATION_KEYS, classification_metrics,
                              log_loss, patient_intervals, segmentation_counts, segmentation_metrics_from_counts,
                              segmentation_metrics_with_intervals, soft_segmentation_loss)
from jaxbrain.files import write_csv
from jaxbrain.folders import RunDir
from jaxbrain.inference import model_resolution_masks, pixels_to_slice_probability, slice_decisions, slice_heatmaps
from jaxbrain.decisions import Decision, choose_rule
from jaxbrain.postprocess import MaskRule
from jaxbrain.train.outputs import plot_classification
from jaxbrain.train.steps import (make_eval_step, make_head_eval_step, make_head_train_step,
                                  make_native_probability_step, make_segmentation_eval_step,
                                  make_segmentation_train_step, make_train_step)
from jaxbrain.train.strategies import cache_features, learning_rate_schedule, make_optimizer


class Task(Protocol):
  """The parts of a task the runner uses."""
  config: Config
  data: SliceArrays
  model: Any
  preprocessing: Preprocessing
  variables: dict
  init_description: str
  tx: optax.GradientTransformation
  train_step: Callable  # pure (state, batch) -> (state, metrics)
  eval_step: Callable  # pure (state, batch) -> per-example outputs ({'probability': [B], ...})
  selection: str  # validation metric that picks the checkpoint (higher is better)
  headline: tuple[str, ...]  # metrics logged every epoch
  shown: tuple[str, ...]  # of those, printed every epoch
  summary_keys: tuple[str, ...]  # test metrics of the run's closing line
  predict_flag: str  # how `jaxbrain predict` takes this kind of run
  steps_per_epoch: int
  learning_rate: Any  # a number or an optax schedule of the optimizer step
  facts: dict  # recorded in config.json
  summary: dict  # recorded in metrics.json: what the run trained (architecture, strategy)

  def arrays(self, part: str) -> dict[str, np.ndarray]:
    """Everything the 'train' step (inputs and targets) or the 'eval' step (inputs) reads, as arrays
    whose rows a batch takes; the runner places them on the devices once when they fit."""

  def rows(self, part: str, indices: np.ndarray) -> np.ndarray:
    """The rows of `arrays(part)` that hold dataset `indices`."""

  def metrics(self, outputs: dict, indices: np.ndarray) -> dict:
    """Metrics of the eval step's `outputs` for `indices` (validation every epoch), with the
    evaluation 'loss'."""

  def test_metrics(self, outputs: dict, indices: np.ndarray) -> dict:
    """`metrics` with 95% patient-bootstrap intervals."""

  def write_outputs(self, run: RunDir, metrics: dict, outputs: dict, indices: np.ndarray) -> None:
    """The task's test files: test_predictions.csv and its plots."""

  decision_steps: dict[str, Callable]  # pure eval steps whose outputs `decide` reads, by name

  def heatmaps(self, variables: dict) -> Callable | None:
    """uint8 slices [n, 256, 256, 3] -> Grad-CAM heatmaps [n, h, w] with `variables`, jitted; None
    for a model without them. What the evaluators may ask of the model."""

  def decide(self, outputs_of: Callable, split: Split, run: RunDir | None) -> tuple[Decision, dict, dict]:
    """(the `Decision` decision.json stores, less the checkpoint; test metrics it adds; test outputs it
    replaces: per-slice arrays in `split.test` order), chosen on the validation patients of the
    selected checkpoint; `outputs_of(step_name, indices)` runs one of `decision_steps` over dataset
    `indices`. Files it leaves go to `run` (None: none)."""


PREDICTION_COLUMNS = ('path', 'patient', 'slice', 'probability', 'label', 'truth')


def write_test_predictions(path: Path, data: SliceArrays, indices: np.ndarray, outputs: dict,
                           threshold: float = DECISION_THRESHOLD) -> None:
  """test_predictions.csv: one row per test slice (path relative to kaggle_3m, patient, slice,
  probability, predicted label (`outputs['label']`, else probability >= threshold), true label, and
  tumor_pixels at 256x256 for segmentation runs)."""
  rows = []
  for k, i in enumerate(indices):
    row = {'path': data.path[i], 'patient': data.patient[i], 'slice': int(data.slice[i]),
           'probability': repr(float(outputs['probability'][k])),
           'label': int(outputs['label'][k] if 'label' in outputs else outputs['probability'][k] >= threshold),
           'truth': int(data.label[i])}
    if 'tumor_pixels' in outputs:
      row['tumor_pixels'] = int(outputs['tumor_pixels'][k])
    rows.append(row)
  write_csv(path, rows, PREDICTION_COLUMNS)


def initial_variables(config: Config, model) -> tuple[dict, str]:
  """(variables, how they were initialized): random, or with the ImageNet ResNet backbone put in
  (never faked: fails with instructions when the weights file is missing)."""
  size = config.data.image_size
  variables = jax.jit(functools.partial(model.init, train=False))({'params': jax.random.key(config.seed)},
                                                                   jnp.zeros((1, size, size, config.input_channels)))
  if config.model.init == 'scratch':
    return variables, 'scratch (random initialization, not ImageNet-pretrained)'
  arch = getattr(config.model, 'arch', getattr(config.model, 'encoder', None))
  path = models.find_weights(arch, config.model.weights)
  if jax.process_count() > 1:  # the orbax cache is a single-process convenience; every process converts
    pretrained = models.load_torchvision_weights(arch, path)
  else:
    pretrained = models.cached_torchvision_weights(arch, path, Path(config.workdir) / 'pretrained')
  return models.with_pretrained_backbone(variables, pretrained), f'imagenet ({path})'


class _SliceTask:
  """What both tasks set up alike: the model the config describes, its initial variables, the
  preprocessing, images as inputs, and patient-bootstrap intervals."""

  def __init__(self, config: Config, data: SliceArrays, split: Split, frozen_backbone: bool = False):
    per_epoch = epoch_length(split.train, data.label, config.data.tumor_share)
    if config.batch_size > per_epoch:
      raise ConfigError(f'--batch-size {config.batch_size} is larger than the {per_epoch} training slices of an epoch: '
                        'not one training step would run')
    self.config, self.data = config, data
    self.model = models.build(config.model)
    self.variables, self.init_description = initial_variables(config, self.model)
    self.preprocessing = Preprocessing.from_name(config.data.preprocess, config.data.image_size)
    self.inputs = data.image  # what the model takes, per dataset index
    opt = config.optimizer
    self.steps_per_epoch = per_epoch // config.batch_size
    self.learning_rate = learning_rate_schedule(opt.learning_rate, opt.schedule, self.steps_per_epoch * config.epochs)
    self.tx = make_optimizer(self.variables['params'], self.learning_rate, opt.momentum, opt.name, opt.weight_decay,
                             frozen_backbone)

  def arrays(self, part: str) -> dict[str, np.ndarray]:
    return {'image': self.inputs, **(self._targets() if part == 'train' else {})}

  def rows(self, part: str, indices: np.ndarray) -> np.ndarray:
    return indices

  def _intervals(self, indices: np.ndarray, metric: Callable) -> dict:
    return patient_intervals(metric, self.data.patient[indices], self.config.bootstrap_samples, self.config.seed)


class Classification(_SliceTask):
  """Tumor / no tumor per slice with a ResNet; the feature extractor may train on cached features."""
  selection = 'roc_auc'
  headline = CLASSIFICATION_KEYS
  shown = ('accuracy', 'balanced_accuracy', 'roc_auc', 'sensitivity', 'specificity')
  summary_keys = ('accuracy', 'balanced_accuracy', 'roc_auc')
  predict_flag = '--run'

  def __init__(self, config: Config, data: SliceArrays, split: Split, progress: bool = False):
    frozen = config.task.strategy == 'feature_extractor'
    super().__init__(config, data, split, frozen_backbone=frozen)
    self.summary = {'arch': config.model.arch, 'strategy': config.task.strategy}
    use_cache = frozen and config.task.feature_cache and config.task.frozen_bn == 'running'
    if frozen and config.task.feature_cache and not use_cache and progress:
      print('feature cache off: --frozen-bn batch computes new BatchNorm statistics every step, which the cache '
            '(features computed once, with running statistics) cannot replay', flush=True)
    if use_cache and (self.preprocessing.affine or self.preprocessing.intensity):
      raise ConfigError(f'the feature cache replays flips only, not the random augmentation of '
                        f'{config.data.preprocess!r}: pass --no-feature-cache, or a preprocessing without _affine and '
                        '_intensity')
    self.facts = {'feature_cache': use_cache}
    self._cached = self._cache_features(split, progress) if use_cache else None
    if use_cache:
      self.train_step, self.eval_step = make_head_train_step(self.model, self.tx), make_head_eval_step(self.model)
    else:
      mask_loss_weight = self._mask_loss_weight()
      self.train_step = make_train_step(self.model, self.tx, self.preprocessing, frozen, config.task.frozen_bn,
                                        mask_loss_weight)
      self.eval_step = make_eval_step(self.model, self.preprocessing, config.task.flip_average,
                                      config.task.score_with_mask_head)

  def _cache_features(self, split: Split, progress: bool) -> dict:
    """{part: (sorted dataset indices, their features)} of the frozen backbone, computed once."""
    model, variables = self.model, self.variables
    features_fn = functools.partial(jax.jit(lambda v, x: model.apply(v, x, method='features')), variables)
    cache = functools.partial(cache_features, features_fn, self.data, preprocessing=self.preprocessing,
                              batch_size=self.config.batch_size, progress=progress)
    evaluated = np.union1d(split.validation, split.test)
    return {'train': (split.train, cache(indices=split.train, with_flipped=self.preprocessing.flip)),
            'eval': (evaluated, cache(indices=evaluated, with_flipped=False))}

  def _targets(self) -> dict[str, np.ndarray]:
    """Labels, and the masks when the mask head trains (the step reads only training rows)."""
    return {'label': self.data.label, **({'mask': self.data.mask} if self._mask_loss_weight() else {})}

  def _mask_loss_weight(self) -> float:
    """The joint loss's weight: 0 (no masks read) without a mask head."""
    return self.config.task.mask_loss_weight if self.config.model.mask_head else 0.0

  def arrays(self, part: str) -> dict[str, np.ndarray]:
    if self._cached is None:
      return super().arrays(part)
    cached, features = self._cached[part]
    return {'features': features, **({'label': self.data.label[cached]} if part == 'train' else {})}

  def rows(self, part: str, indices: np.ndarray) -> np.ndarray:
    return indices if self._cached is None else np.searchsorted(self._cached[part][0], indices)

  def metrics(self, outputs: dict, indices: np.ndarray) -> dict:
    labels = self.data.label[indices]
    return {**classification_metrics(labels, outputs['probability']),
            'loss': log_loss(labels, outputs['probability'])}

  def test_metrics(self, outputs: dict, indices: np.ndarray) -> dict:
    labels, probabilities = self.data.label[indices], outputs['probability']
    resampled = lambda rows, groups: classification_metrics(labels[rows], probabilities[rows])
    return {**classification_metrics(labels, probabilities),
            **self._intervals(indices, resampled)}

  def write_outputs(self, run: RunDir, metrics: dict, outputs: dict, indices: np.ndarray) -> None:
    write_test_predictions(run.test_predictions, self.data, indices, outputs)
    plot_classification(run, metrics, self.data.label[indices], outputs['probability'])

  decision_steps = {}

  def heatmaps(self, variables: dict) -> Callable:
    return jax.jit(functools.partial(slice_heatmaps, self.model, variables, self.preprocessing))

  def decide(self, outputs_of: Callable, split: Split, run: RunDir | None) -> tuple[Decision, dict, dict]:
    """The fixed default threshold, recorded as such: a classifier's label is probability >=
    `DECISION_THRESHOLD`; nothing is chosen on validation, so test gains nothing from it."""
    return Decision(), {}, {}


class Segmentation(_SliceTask):
  """The tumor mask per slice with a ResUNet; metrics at the model's resolution, per volume."""
  selection = 'dice_per_volume'
  headline = SEGMENTATION_KEYS
  shown = ('dice_per_volume', 'dice_tumor_slices', 'false_positive_rate', 'tumor_detection_rate')
  summary_keys = ('dice_per_volume', 'false_positive_rate')
  predict_flag = '--seg-run'

  def __init__(self, config: Config, data: SliceArrays, split: Split, progress: bool = False):
    super().__init__(config, data, split)
    self.summary = {'arch': f'resunet-{config.model.encoder}', 'strategy': None}
    self.inputs = segmenter_inputs(data.image, data.patient, config.task.context_slices,  # sorted by patient, slice
                                   config.task.scale_volumes)
    self.train_step = make_segmentation_train_step(self.model, self.tx, self.preprocessing)
    self.eval_step = make_segmentation_eval_step(self.model, self.preprocessing)
    self.decision_steps = {f'flip_average={flip}': make_native_probability_step(self.model, self.preprocessing, flip)
                           for flip in (False, True)}
    self.facts = {}
    self._resized = {}

  def _targets(self) -> dict[str, np.ndarray]:
    return {'mask': self.data.mask}

  def heatmaps(self, variables: dict) -> None:
    return None

  def true_masks(self, indices: np.ndarray) -> np.ndarray:
    """True masks [N, S, S] bool at the model's resolution, where the metrics are computed; resized
    once per set of indices."""
    key = np.asarray(indices).tobytes()
    if key not in self._resized:
      size = self.config.data.image_size
      masks = resize(jnp.asarray(self.data.mask[indices, :, :, None]), size, 'nearest')[..., 0]
      self._resized[key] = np.asarray(masks).astype(bool)
    return self._resized[key]

  def _counts(self, outputs: dict, indices: np.ndarray) -> dict:
    return segmentation_counts(model_resolution_masks(outputs['mask_probability']), self.true_masks(indices))

  def metrics(self, outputs: dict, indices: np.ndarray) -> dict:
    return {**segmentation_metrics_from_counts(self._counts(outputs, indices), self.data.patient[indices]),
            'loss': soft_segmentation_loss(outputs['mask_probability'], self.true_masks(indices))}

  def test_metrics(self, outputs: dict, indices: np.ndarray) -> dict:
    return segmentation_metrics_with_intervals(self._counts(outputs, indices), self.data.patient[indices],
                                               self.config.bootstrap_samples, self.config.seed)

  def write_outputs(self, run: RunDir, metrics: dict, outputs: dict, indices: np.ndarray) -> None:
    write_test_predictions(run.test_predictions, self.data, indices, outputs)

  def _stack_order(self, indices: np.ndarray) -> np.ndarray:
    """The order of `indices` by patient, then slice: the stacks the post-processing reads."""
    return np.lexsort((self.data.slice[indices], self.data.patient[indices]))

  def decide(self, outputs_of: Callable, split: Split, run: RunDir | None) -> tuple[Decision, dict, dict]:
    """The mask post-processing (`postprocess.MaskRule`) with the highest mean per-volume Dice on
    validation at the slices' native 256x256; the test metrics there with and without it (with
    patient-bootstrap intervals); and the test slices' probability, tumor pixels, label and mask as
    `jaxbrain predict` gives them with the rule. Every rule tried goes to mask_rules.csv."""
    validation = split.validation[self._stack_order(split.validation)]
    probabilities = {flip: outputs_of(f'flip_average={flip}', validation)['native_probability']
                     for flip in (False, True)}
    truth = self.data.mask[validation] > 0
    rule, tried = choose_rule(probabilities, truth, self.data.patient[validation])
    del probabilities
    if run is not None:
      write_csv(run.mask_rules, tried)
    score = lambda wanted: next(r['dice_per_volume'] for r in tried if MaskRule.from_json(r) == wanted)  # noqa: E731
    decision = Decision.by_mask_rule(
        rule, f'validation patients ({len(np.unique(self.data.patient[validation]))}): mean per-volume Dice at '
              '256x256, of the rules in mask_rules.csv', {'default_rule': score(MaskRule()), 'chosen_rule': score(rule)})
    order = self._stack_order(split.test)
    test = split.test[order]
    truth, patients = self.data.mask[test] > 0, self.data.patient[test]
    pixels = {flip: outputs_of(f'flip_average={flip}', test)['native_probability']
              for flip in {False, rule.flip_average}}  # each variant evaluated once
    added, decided = {}, None
    for name, applied in (('native', MaskRule()), ('native_postprocessed', rule)):
      probability = pixels_to_slice_probability(pixels[applied.flip_average])
      decided = slice_decisions(probability, pixels=pixels[applied.flip_average], rule=applied, stacks=patients)
      added[name] = segmentation_metrics_with_intervals(segmentation_counts(decided.mask, truth), patients,
                                                        self.config.bootstrap_samples, self.config.seed)
    # the chosen rule's decisions (the last made), in stack order; back to split.test's
    back = np.argsort(order)
    outputs = {'probability': probability[back], 'tumor_pixels': decided.mask.sum(axis=(1, 2))[back],
               'label': decided.label[back], 'mask': decided.mask[back]}
    return decision, added, outputs


TASKS = {'classify': Classification, 'segment': Segmentation}


def build_task(config: Config, data: SliceArrays, split: Split, progress: bool = False) -> Task:
  return TASKS[config.task.name](config, data, split, progress)
