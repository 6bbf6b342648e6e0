"""Classification metrics on host NumPy arrays, with patient-bootstrap confidence intervals.

Conventions: label 1 = tumor (positive). A ratio whose denominator is zero (e.g. sensitivity
with no tumor slice) is NaN, not 0, so it cannot pass for a real number.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

CLASSIFICATION_KEYS = ('accuracy', 'balanced_accuracy', 'roc_auc', 'sensitivity', 'specificity', 'precision', 'f1')


def _ratio(num: float, den: float) -> float:
  return float(num) / den if den else float('nan')


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """[[TN, FP], [FN, TP]]: rows are the true class, columns the predicted one."""
  labels, predictions = np.asarray(labels).astype(int), np.asarray(predictions).astype(int)
  return np.array([[np.sum((labels == t) & (predictions == p)) for p in (0, 1)] for t in (0, 1)])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2."""
  labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if not n_pos or not n_neg:
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


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
  """accuracy, balanced_accuracy, roc_auc, sensitivity, specificity, precision, f1, confusion_matrix."""
  labels = np.asarray(labels).astype(int)
  predictions = (np.asarray(probabilities) >= threshold).astype(int)
  (tn, fp), (fn, tp) = confusion_matrix(labels, predictions)
  sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
  precision = _ratio(tp, tp + fp)
  return {
      'accuracy': _ratio(tp + tn, len(labels)),
      'balanced_accuracy': (sensitivity + specificity) / 2,
      'roc_auc': roc_auc(labels, probabilities),
      'sensitivity': sensitivity,
      'specificity': specificity,
      'precision': precision,
      'f1': _ratio(2 * tp, 2 * tp + fp + fn),
      'confusion_matrix': [[int(tn), int(fp)], [int(fn), int(tp)]],
  }


def bootstrap_by_patient(labels: np.ndarray, probabilities: np.ndarray, patients: np.ndarray,
                         metric: Callable[[np.ndarray, np.ndarray], dict] = classification_metrics,
                         samples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
  """Percentile confidence intervals for each scalar metric, resampling patients with replacement.

  Slices of one patient are correlated; resampling whole patients gives honest intervals.
  Returns {metric name: [low, high]}; resamples where a metric is undefined are left out.
  """
  labels, probabilities, patients = map(np.asarray, (labels, probabilities, patients))
  unique = np.unique(patients)
  members = [np.flatnonzero(patients == p) for p in unique]
  rng = np.random.default_rng(seed)
  values: dict[str, list[float]] = {}
  for _ in range(samples):
    chosen = np.concatenate([members[i] for i in rng.integers(0, len(unique), len(unique))])
    for name, value in metric(labels[chosen], probabilities[chosen]).items():
      if isinstance(value, float) and not np.isnan(value):
        values.setdefault(name, []).append(value)
  tail = (1 - level) / 2 * 100
  return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for name, v in values.items()}


# --- segmentation -----------------------------------------------------------------------------
# About 65% of LGG slices have an empty mask, so every metric below states what an empty mask
# means for it instead of leaving it to a division by zero.

def dice(predicted: np.ndarray, true: np.ndarray, empty_score: float = 1.0) -> float:
  """Dice 2|P∩T| / (|P| + |T|) of two binary masks (any shape); `empty_score` when both are empty."""
  predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
  total = predicted.sum() + true.sum()
  return empty_score if total == 0 else float(2 * np.logical_and(predicted, true).sum() / total)


def iou(predicted: np.ndarray, true: np.ndarray, empty_score: float = 1.0) -> float:
  """Intersection over union of two binary masks; `empty_score` when both are empty."""
  predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
  union = np.logical_or(predicted, true).sum()
  return empty_score if union == 0 else float(np.logical_and(predicted, true).sum() / union)


def segmentation_metrics(predicted: np.ndarray, true: np.ndarray, patients: np.ndarray) -> dict:
  """Metrics of binary masks [N, H, W] of slices belonging to `patients` [N].

  - dice_per_volume: Dice of each patient's stacked slices (a 3D volume), averaged over
    patients (Buda et al. 2019 report this, mean 82%); a volume empty in both scores 1.
  - iou_per_volume: the same with IoU.
  - dice_tumor_slices: mean Dice over slices whose true mask is non-empty (undefined, NaN, without any).
  - false_positive_rate: fraction of tumor-free slices with at least one predicted tumor pixel.
  - tumor_detection_rate: fraction of tumor slices with at least one predicted pixel.
  """
  predicted, true, patients = np.asarray(predicted, bool), np.asarray(true, bool), np.asarray(patients)
  volumes = [patients == p for p in np.unique(patients)]
  has_tumor = true.reshape(len(true), -1).any(1)
  predicted_any = predicted.reshape(len(predicted), -1).any(1)
  tumor_dice = [dice(p, t) for p, t in zip(predicted[has_tumor], true[has_tumor])]
  return {
      'dice_per_volume': float(np.mean([dice(predicted[v], true[v]) for v in volumes])),
      'iou_per_volume': float(np.mean([iou(predicted[v], true[v]) for v in volumes])),
      'dice_tumor_slices': float(np.mean(tumor_dice)) if tumor_dice else float('nan'),
      'false_positive_rate': _ratio(np.sum(predicted_any & ~has_tumor), np.sum(~has_tumor)),
      'tumor_detection_rate': _ratio(np.sum(predicted_any & has_tumor), np.sum(has_tumor)),
      'volumes': len(volumes),
  }
