"""Metrics on host NumPy arrays, one definition each: slice detection (decisions and their ranking),
segmentation (Dice, IoU, HD95, per volume), the Grad-CAM pointing game, and patient-bootstrap
confidence intervals.

Conventions: label 1 = tumor (positive). A ratio whose denominator is zero (e.g. sensitivity
with no tumor slice) is NaN, not 0, so it cannot pass for a real number.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain.flags import INFERENCE  # its bootstrap resamples: the intervals' default

__all__ = [
  'DECISION_THRESHOLD',
  'CLASSIFICATION_KEYS',
  'SEGMENTATION_KEYS',
  'confusion_matrix',
  'roc_auc',
  'roc_curve',
  'decision_metrics',
  'classification_metrics',
  'pointing_game',
  'MIN_BOOTSTRAP_PATIENTS',
  'log_loss',
  'bootstrap_by_patient',
  'patient_intervals',
  'paired_difference',
  'dice_from_counts',
  'soft_segmentation_loss',
  'dice',
  'iou',
  'segmentation_counts',
  'segmentation_metrics_from_counts',
  'segmentation_metrics_with_intervals',
  'segmentation_metrics',
  'hausdorff95',
]

DECISION_THRESHOLD = 0.5
"""Tumor when the probability is at least this, unless a run stores another in decision.json."""
CLASSIFICATION_KEYS = ('accuracy', 'balanced_accuracy', 'roc_auc', 'sensitivity', 'specificity', 'precision', 'f1')
"""The slice-detection metrics every classification result holds."""
SEGMENTATION_KEYS = ('dice_per_volume', 'iou_per_volume', 'dice_tumor_slices', 'false_positive_rate',
                     'tumor_detection_rate')
"""The segmentation metrics every segmentation result holds."""


def _ratio(num: float, den: float) -> float:
  return float(num) / den if den else float('nan')


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """[[TN, FP], [FN, TP]]: rows are the true class, columns the predicted one."""
  labels, predictions = np.asarray(labels).astype(int), np.asarray(predictions).astype(int)
  return np.array([[np.sum((labels == t) & (predictions == p)) for p in (0, 1)] for t in (0, 1)])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2.

  NaN when a class is missing or any score is not finite: a diverged model's NaN scores must not
  rank as a number (they would otherwise sort as ties or extremes and give a plausible area).
  """
  labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if not n_pos or not n_neg or not np.isfinite(scores).all():
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # average ranks over ties (1-based)
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  average = first + (counts + 1) / 2
  ranks[order] = np.repeat(average, counts)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false-positive rates, true-positive rates) at every distinct threshold, from (0, 0) to (1, 1)."""
  labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
  thresholds = np.unique(scores)[::-1]
  tpr = [0.0] + [_ratio((scores[labels] >= t).sum(), labels.sum()) for t in thresholds]
  fpr = [0.0] + [_ratio((scores[~labels] >= t).sum(), (~labels).sum()) for t in thresholds]
  return np.array(fpr), np.array(tpr)


def decision_metrics(labels: np.ndarray, decisions: np.ndarray, scores: np.ndarray) -> dict:
  """accuracy, balanced_accuracy, sensitivity, specificity, precision, f1 and confusion_matrix of the
  binary `decisions` (1 = tumor), and roc_auc of the `scores` that rank them (NaN when a score is not
  finite). The decisions are taken as given: a rule that is not a threshold on `scores` (a
  segmenter's post-processed mask, a gate) is scored as it decided."""
  labels, decisions = np.asarray(labels).astype(int), np.asarray(decisions).astype(int)
  (tn, fp), (fn, tp) = confusion_matrix(labels, decisions)
  sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
  return {
      'accuracy': _ratio(tp + tn, len(labels)),
      'balanced_accuracy': (sensitivity + specificity) / 2,
      'roc_auc': roc_auc(labels, scores),
      'sensitivity': sensitivity,
      'specificity': specificity,
      'precision': _ratio(tp, tp + fp),
      'f1': _ratio(2 * tp, 2 * tp + fp + fn),
      'confusion_matrix': [[int(tn), int(fp)], [int(fn), int(tp)]],
  }


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray,
                           threshold: float = DECISION_THRESHOLD) -> dict:
  """`decision_metrics` of the decisions probability >= `threshold`."""
  return decision_metrics(labels, np.asarray(probabilities) >= threshold, probabilities)


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray) -> float:
  """Fraction of tumor slices whose heatmap peak (bilinearly upsampled to the mask size) falls inside
  the true mask; heatmaps [N, h, w], masks [N, H, W]. Slices without tumor do not count; NaN when
  no slice has a tumor."""
  masks = np.asarray(masks, bool)
  has_tumor = masks.reshape(len(masks), -1).any(1)
  if not has_tumor.any():
    return float('nan')
  tumor_maps = jnp.asarray(heatmaps[has_tumor])
  upsampled = np.asarray(jax.image.resize(tumor_maps, (len(tumor_maps), *masks.shape[1:]), 'bilinear'))
  peaks = upsampled.reshape(len(upsampled), -1).argmax(1)
  return float(masks[has_tumor].reshape(has_tumor.sum(), -1)[np.arange(len(peaks)), peaks].mean())


MIN_BOOTSTRAP_PATIENTS = 5
"""Fewer patients give no interval: a resample of 2 patients says nothing."""


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
  """Mean binary cross-entropy of tumor probabilities against 0/1 labels: the evaluation loss of a
  classifier (training's two-class softmax cross-entropy, from probabilities). Probabilities are
  clipped to [eps, 1 - eps], so a confident mistake costs -log(eps) rather than infinity; a NaN
  probability gives NaN (never a finite loss)."""
  p = np.clip(np.asarray(probabilities, np.float64), eps, 1 - eps)
  y = np.asarray(labels) == 1
  return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def bootstrap_by_patient(metric: Callable[[np.ndarray, np.ndarray], dict], patients: np.ndarray,
                         samples: int = INFERENCE.bootstrap_samples, level: float = 0.95, seed: int = 0) -> dict:
  """Percentile confidence intervals for each scalar of `metric`, resampling patients with replacement.

  Slices of one patient are correlated, so whole patients are resampled: `metric(rows, groups)`
  gets the resampled slices' row indices and, per row, the id of its resampled patient (a patient
  drawn twice counts as two volumes). Returns {metric name: [low, high]}; resamples where a
  metric is undefined (NaN) are left out.
  """
  patients = np.asarray(patients)
  unique = np.unique(patients)
  members = [np.flatnonzero(patients == p) for p in unique]
  rng = np.random.default_rng(seed)
  values: dict[str, list[float]] = {}
  for _ in range(samples):
    drawn = rng.integers(0, len(unique), len(unique))
    rows = np.concatenate([members[i] for i in drawn])
    groups = np.concatenate([np.full(len(members[i]), k) for k, i in enumerate(drawn)])
    for name, value in metric(rows, groups).items():
      if isinstance(value, float) and not np.isnan(value):
        values.setdefault(name, []).append(value)
  tail = (1 - level) / 2 * 100
  return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for name, v in values.items()}


def patient_intervals(metric: Callable[[np.ndarray, np.ndarray], dict], patients: np.ndarray, samples: int,
                      seed: int = 0) -> dict:
  """{'confidence_95': intervals} from `bootstrap_by_patient`, or, with fewer than
  MIN_BOOTSTRAP_PATIENTS patients (or no samples), {'confidence_95': None, 'confidence_95_note': why}:
  a resample of 2 patients gives intervals such as [1.0, 1.0] that mean nothing."""
  count = len(np.unique(patients))
  if count < MIN_BOOTSTRAP_PATIENTS:
    return {'confidence_95': None,
            'confidence_95_note': f'not meaningful: {count} patients (a patient bootstrap needs >= {MIN_BOOTSTRAP_PATIENTS})'}
  if not samples:
    return {'confidence_95': None, 'confidence_95_note': 'not computed (--bootstrap-samples 0)'}
  return {'confidence_95': bootstrap_by_patient(metric, patients, samples, seed=seed)}


def paired_difference(metric_a: Callable[[np.ndarray, np.ndarray], dict], metric_b: Callable[[np.ndarray, np.ndarray], dict],
                      patients: np.ndarray, samples: int = INFERENCE.bootstrap_samples, seed: int = 0) -> dict:
  """How much B beats A on the same slices: {'difference': {metric: B - A}, 'confidence_95':
  {metric: [low, high]}} for every scalar both `metric_a(rows, groups)` and `metric_b` give (the
  `bootstrap_by_patient` signature; NaN differences are left out of the intervals).

  Paired: each bootstrap resample draws patients once and scores both on them, so what the two
  share (which patients are hard) cancels; an interval that excludes 0 says B differs from A on
  patients like these, one that straddles 0 says the test patients cannot tell them apart.
  """
  patients = np.asarray(patients)

  def difference(rows, groups):
    a, b = metric_a(rows, groups), metric_b(rows, groups)
    return {k: b[k] - a[k] for k in a if k in b and isinstance(a[k], float) and isinstance(b[k], float)}

  return {'difference': difference(np.arange(len(patients)), patients),
          **patient_intervals(difference, patients, samples, seed)}


# --- segmentation -----------------------------------------------------------------------------
# Most LGG slices have an empty mask, so every metric below states what an empty mask means for it
# instead of leaving it to a division by zero.

def dice_from_counts(intersection, predicted, true, *, empty_score=1.0, smooth=0.0):
  """Dice (2|P∩T| + smooth) / (|P| + |T| + smooth) from pixel counts or soft sums (NumPy or JAX
  arrays, any shape, elementwise); `empty_score` where both masks are empty (|P| + |T| = 0).

  The one Dice of jaxbrain: evaluation uses counts with smooth 0 and empty_score 1 (an empty
  volume predicted empty is perfect); the training loss and metric use batch sums with smooth 1,
  which gives an all-empty batch predicted empty a Dice of 1 as well, and keeps the gradient finite.
  """
  where = jnp.where if isinstance(intersection, jax.Array) or isinstance(predicted, jax.Array) else np.where
  total = predicted + true
  return where(total == 0, empty_score, (2 * intersection + smooth) / where(total + smooth == 0, 1, total + smooth))


def soft_segmentation_loss(probabilities: np.ndarray, true: np.ndarray, eps: float = 1e-7) -> float:
  """The evaluation loss of a segmenter: training's loss (mean pixel binary cross-entropy + 1 - soft
  Dice with smooth 1) on a whole set taken as one batch. All masks empty and predicted empty:
  the soft-Dice part is 0 (as in training, via `dice_from_counts`)."""
  p = np.clip(np.asarray(probabilities, np.float64), eps, 1 - eps)
  t = np.asarray(true, bool)
  bce = -np.mean(np.where(t, np.log(p), np.log1p(-p)))
  soft = dice_from_counts(float(np.sum(p * t)), float(np.sum(p)), float(t.sum()), smooth=1.0)
  return float(bce + 1 - soft)


def dice(predicted: np.ndarray, true: np.ndarray, empty_score: float = 1.0) -> float:
  """Dice of two binary masks (any shape); `empty_score` when both are empty."""
  predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
  return float(dice_from_counts(np.sum(predicted & true), np.sum(predicted), np.sum(true), empty_score=empty_score))


def iou(predicted: np.ndarray, true: np.ndarray, empty_score: float = 1.0) -> float:
  """Intersection over union of two binary masks; `empty_score` when both are empty."""
  predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
  union = np.logical_or(predicted, true).sum()
  return empty_score if union == 0 else float(np.logical_and(predicted, true).sum() / union)


def segmentation_counts(predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
  """Per-slice pixel counts of binary masks [N, H, W]: intersection, predicted, true, union ([N] each)."""
  predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
  flat = lambda a: a.reshape(len(a), -1)
  return {'intersection': flat(predicted & true).sum(1), 'predicted': flat(predicted).sum(1),
          'true': flat(true).sum(1), 'union': flat(predicted | true).sum(1)}


def segmentation_metrics_from_counts(counts: dict[str, np.ndarray], patients: np.ndarray) -> dict:
  """`segmentation_metrics` from `segmentation_counts` (what a patient bootstrap resamples)."""
  patients = np.asarray(patients)
  _, volume = np.unique(patients, return_inverse=True)
  per_volume = {k: np.bincount(volume, weights=v.astype(np.float64)) for k, v in counts.items()}
  volume_dice = dice_from_counts(per_volume['intersection'], per_volume['predicted'], per_volume['true'])
  volume_iou = np.where(per_volume['union'] == 0, 1.0, per_volume['intersection'] / np.maximum(per_volume['union'], 1))
  has_tumor, predicted_any = counts['true'] > 0, counts['predicted'] > 0
  tumor_dice = dice_from_counts(counts['intersection'][has_tumor], counts['predicted'][has_tumor],
                                counts['true'][has_tumor])
  return {
      'dice_per_volume': float(volume_dice.mean()),
      'iou_per_volume': float(volume_iou.mean()),
      'dice_tumor_slices': float(tumor_dice.mean()) if has_tumor.any() else float('nan'),
      'false_positive_rate': _ratio(np.sum(predicted_any & ~has_tumor), np.sum(~has_tumor)),
      'tumor_detection_rate': _ratio(np.sum(predicted_any & has_tumor), np.sum(has_tumor)),
      'volumes': len(per_volume['true']),
  }


def segmentation_metrics_with_intervals(counts: dict[str, np.ndarray], patients: np.ndarray, samples: int,
                                        seed: int = 0) -> dict:
  """`segmentation_metrics_from_counts`, with their 95% intervals from `patient_intervals`."""
  resampled = lambda rows, groups: segmentation_metrics_from_counts({k: v[rows] for k, v in counts.items()}, groups)  # noqa: E731
  return {**segmentation_metrics_from_counts(counts, patients), **patient_intervals(resampled, patients, samples, seed)}


def segmentation_metrics(predicted: np.ndarray, true: np.ndarray, patients: np.ndarray) -> dict:
  """Metrics of binary masks [N, H, W] of slices belonging to `patients` [N].

  - dice_per_volume: Dice of each patient's stacked slices (a 3D volume), averaged over
    patients (Buda et al. 2019 report this, mean 82%); a volume empty in both scores 1.
  - iou_per_volume: the same with IoU.
  - dice_tumor_slices: mean Dice over slices whose true mask is non-empty (undefined, NaN, without any).
  - false_positive_rate: fraction of tumor-free slices with at least one predicted tumor pixel.
  - tumor_detection_rate: fraction of tumor slices with at least one predicted pixel.
  """
  return segmentation_metrics_from_counts(segmentation_counts(predicted, true), patients)


def _surface(mask: np.ndarray) -> np.ndarray:
  """The mask's boundary voxels: the mask minus its erosion by the face-connected cross (a voxel
  on the array's edge counts as boundary)."""
  from scipy import ndimage

  return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)


def hausdorff95(predicted: np.ndarray, true: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
  """95th-percentile Hausdorff distance between two binary masks (any number of dimensions), as
  MONAI's `compute_hausdorff_distance(percentile=95)` defines it: the distances from each boundary
  voxel of one mask to the nearest boundary voxel of the other, the 95th percentile of each
  direction, the larger of the two; in units of `spacing` (default: voxels).

  Empty masks: both empty -> 0.0 (nothing to miss, as Dice scores it 1); exactly one empty ->
  inf (no surface to measure to; MONAI gives inf or NaN there). Means over volumes should count
  the inf cases separately rather than average them."""
  from scipy import ndimage

  predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
  if not predicted.any() and not true.any():
    return 0.0
  if not predicted.any() or not true.any():
    return float('inf')
  edges_p, edges_t = _surface(predicted), _surface(true)
  to_t = ndimage.distance_transform_edt(~edges_t, sampling=spacing)[edges_p]
  to_p = ndimage.distance_transform_edt(~edges_p, sampling=spacing)[edges_t]
  return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))
