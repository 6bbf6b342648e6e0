"""Every metric against a case computed by hand."""
import math

import numpy as np
import pytest

from jaxbrain.metrics import (bootstrap_by_patient, classification_metrics, confusion_matrix, patient_intervals, roc_auc,
                              roc_curve)

# 10 slices: 4 tumor (1), 6 healthy (0). Threshold 0.5 -> predictions below.
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PROBS = np.array([0.9, 0.8, 0.4, 0.6, 0.7, 0.2, 0.1, 0.3, 0.45, 0.05])
# predictions:     1    1    0    1    1    0    0    0    0     0
# TP = 3, FN = 1, FP = 1, TN = 5


def test_confusion_matrix():
  np.testing.assert_array_equal(confusion_matrix(LABELS, PROBS >= 0.5), [[5, 1], [1, 3]])


def test_hand_computed_metrics():
  m = classification_metrics(LABELS, PROBS)
  assert m['confusion_matrix'] == [[5, 1], [1, 3]]
  assert m['accuracy'] == pytest.approx(8 / 10)
  assert m['sensitivity'] == pytest.approx(3 / 4)
  assert m['specificity'] == pytest.approx(5 / 6)
  assert m['balanced_accuracy'] == pytest.approx((3 / 4 + 5 / 6) / 2)
  assert m['precision'] == pytest.approx(3 / 4)
  assert m['f1'] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
  # AUC: of the 4 x 6 = 24 (tumor, healthy) pairs, the tumor score is higher in all but
  # (0.4 vs 0.7), (0.4 vs 0.45), (0.6 vs 0.7): 21 / 24
  assert m['roc_auc'] == pytest.approx(21 / 24)


def test_auc_ties_count_half():
  assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
  assert roc_auc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_roc_curve_ends_and_area():
  fpr, tpr = roc_curve(LABELS, PROBS)
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
  assert np.trapezoid(tpr, fpr) == pytest.approx(21 / 24)


def test_undefined_ratios_are_nan():
  m = classification_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.7, 0.3]))
  assert math.isnan(m['sensitivity']) and math.isnan(m['roc_auc'])
  assert m['specificity'] == pytest.approx(3 / 4)


def accuracy_of(labels, probabilities):
  return lambda rows, groups: classification_metrics(labels[rows], probabilities[rows])


def test_patient_bootstrap_interval():
  patients = np.array(['a', 'a', 'b', 'b', 'c', 'c', 'd', 'd', 'e', 'e'])
  ci = bootstrap_by_patient(accuracy_of(LABELS, PROBS), patients, samples=200, seed=0)
  low, high = ci['accuracy']
  assert 0 <= low <= 0.8 <= high <= 1
  # a perfect classifier has a degenerate interval at 1
  perfect = bootstrap_by_patient(accuracy_of(LABELS, LABELS.astype(float)), patients, samples=50)
  assert perfect['accuracy'] == [1.0, 1.0]
  # resampling whole patients: each resample's accuracy is a mean of per-patient pairs, so on
  # 5 patients it takes values in multiples of 1/10
  assert all(round(v * 10, 6) == round(v * 10) for v in ci['accuracy'])


def test_patient_bootstrap_is_wider_than_a_slice_bootstrap_when_patients_differ():
  """Catches a bootstrap that resamples slices instead of patients: 10 patients of 20 slices, half
  classified all right and half all wrong, give accuracy 0.5 either way, but resampling patients
  varies it in steps of 1/10 (interval about [0.2, 0.8]) while resampling the 200 slices
  independently gives about [0.43, 0.57]."""
  patients = np.repeat([f'P{i}' for i in range(10)], 20)
  labels = np.ones(200, int)
  probabilities = np.repeat([1.0, 0.0] * 5, 20)
  by_patient = bootstrap_by_patient(accuracy_of(labels, probabilities), patients, samples=400)['accuracy']
  by_slice = bootstrap_by_patient(accuracy_of(labels, probabilities), np.arange(200), samples=400)['accuracy']
  assert by_patient[1] - by_patient[0] > 3 * (by_slice[1] - by_slice[0])
  assert by_patient[0] <= 0.3 and by_patient[1] >= 0.7


def test_intervals_on_few_patients_are_not_meaningful():
  """Catches intervals such as [1.0, 1.0] reported from a resample of 2 test patients."""
  few = patient_intervals(accuracy_of(LABELS, LABELS.astype(float)), np.array(['a'] * 5 + ['b'] * 5), samples=50)
  assert few['confidence_95'] is None and 'not meaningful: 2 patients' in few['confidence_95_note']
  patients = np.array(['a', 'a', 'b', 'b', 'c', 'c', 'd', 'd', 'e', 'e'])
  enough = patient_intervals(accuracy_of(LABELS, PROBS), patients, samples=50)
  assert set(enough) == {'confidence_95'} and 'roc_auc' in enough['confidence_95']


def test_nan_scores_give_nan_auc():
  """Catches NaN probabilities (a diverged model) ranked as numbers: np.unique/argsort would give
  them a rank, and an AUC such as 0.5 or 0.9 could pick a diverged checkpoint."""
  scores = PROBS.copy()
  scores[3] = np.nan
  assert math.isnan(roc_auc(LABELS, scores))
  assert math.isnan(roc_auc(LABELS, np.full(len(LABELS), np.nan)))
  assert math.isnan(classification_metrics(LABELS, scores)['roc_auc'])


# --- segmentation, on hand-made 4x4 masks ---------------------------------------------------
from jaxbrain.metrics import dice, iou, segmentation_metrics  # noqa: E402

SQUARE = np.zeros((4, 4), bool)
SQUARE[:2, :2] = True  # 4 pixels
SHIFTED = np.zeros((4, 4), bool)
SHIFTED[:2, 1:3] = True  # 4 pixels, 2 shared with SQUARE
EMPTY = np.zeros((4, 4), bool)


def test_dice_and_iou_by_hand():
  assert dice(SQUARE, SQUARE) == 1.0
  assert dice(SQUARE, SHIFTED) == pytest.approx(2 * 2 / 8)
  assert iou(SQUARE, SHIFTED) == pytest.approx(2 / 6)


def test_empty_cases():
  assert dice(EMPTY, EMPTY) == 1.0 and iou(EMPTY, EMPTY) == 1.0  # both empty: perfect by definition
  assert dice(EMPTY, EMPTY, empty_score=float('nan')) != dice(EMPTY, EMPTY, empty_score=float('nan'))
  assert dice(SQUARE, EMPTY) == 0.0 and dice(EMPTY, SQUARE) == 0.0  # empty vs non-empty: zero
  assert iou(EMPTY, SQUARE) == 0.0


def test_segmentation_metrics_by_hand():
  # patient a: slices (SQUARE vs SQUARE), (EMPTY pred vs EMPTY true)  -> volume dice 1
  # patient b: slices (SHIFTED vs SQUARE), (SQUARE pred vs EMPTY true) -> volume: P = 8 px, T = 4 px,
  #            overlap 2 -> dice 4 / 12; IoU 2 / 10
  predicted = np.stack([SQUARE, EMPTY, SHIFTED, SQUARE])
  true = np.stack([SQUARE, EMPTY, SQUARE, EMPTY])
  m = segmentation_metrics(predicted, true, np.array(['a', 'a', 'b', 'b']))
  assert m['dice_per_volume'] == pytest.approx((1 + 4 / 12) / 2)
  assert m['iou_per_volume'] == pytest.approx((1 + 2 / 10) / 2)
  assert m['dice_tumor_slices'] == pytest.approx((1 + 0.5) / 2)
  assert m['false_positive_rate'] == pytest.approx(1 / 2)  # b's empty slice has a prediction, a's does not
  assert m['tumor_detection_rate'] == 1.0 and m['volumes'] == 2


def test_segmentation_metrics_without_tumor_slices():
  m = segmentation_metrics(np.stack([EMPTY, SQUARE]), np.stack([EMPTY, EMPTY]), np.array(['a', 'a']))
  assert math.isnan(m['dice_tumor_slices']) and m['dice_per_volume'] == 0.0 and m['false_positive_rate'] == 0.5


def test_segmentation_bootstrap_counts_a_patient_drawn_twice_as_two_volumes():
  """Catches resampled patients merged by their id (a patient drawn twice would count once in the
  per-volume mean): with patients a (Dice 1) and b (Dice 0.5), a resample (a, a, b) has mean 5/6."""
  from jaxbrain.metrics import segmentation_counts, segmentation_metrics_from_counts
  counts = segmentation_counts(np.stack([SQUARE, SHIFTED]), np.stack([SQUARE, SQUARE]))
  rows, groups = np.array([0, 0, 1]), np.array([0, 1, 2])
  value = segmentation_metrics_from_counts({k: v[rows] for k, v in counts.items()}, groups)['dice_per_volume']
  assert value == pytest.approx((1 + 1 + 0.5) / 3)


def test_paired_difference_resamples_both_runs_on_the_same_patients():
  """Catches an unpaired bootstrap (A and B resampled separately: two identical runs would get an
  interval of nonzero width, not [0, 0]) and a difference taken the wrong way round (B - A)."""
  from jaxbrain.metrics import paired_difference
  rng = np.random.default_rng(0)
  patients = np.repeat(np.arange(8), 20)
  labels = rng.integers(0, 2, len(patients))
  a = np.clip(labels * 0.3 + rng.normal(0.35, 0.25, len(labels)), 0, 1)
  scored = lambda probabilities: lambda rows, groups: {'roc_auc': roc_auc(labels[rows], probabilities[rows])}  # noqa: E731
  same = paired_difference(scored(a), scored(a), patients, samples=200)
  assert all(v == 0 for v in same['difference'].values())
  assert all(interval == [0.0, 0.0] for interval in same['confidence_95'].values())
  better = np.where(labels == 1, np.maximum(a, 0.9), np.minimum(a, 0.1))
  result = paired_difference(scored(a), scored(better), patients, samples=200)
  expected = roc_auc(labels, better) - roc_auc(labels, a)
  assert result['difference']['roc_auc'] == pytest.approx(expected) and expected > 0
  low, high = result['confidence_95']['roc_auc']
  assert 0 < low <= expected <= high


def test_log_loss_by_hand_and_nan_stays_nan():
  """Catches a loss that ignores the label (or swaps p and 1-p), an infinite loss for a confident
  mistake, and a NaN probability turned into a finite loss."""
  from jaxbrain.metrics import log_loss
  assert log_loss(np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
  assert np.isfinite(log_loss(np.array([1]), np.array([0.0])))
  assert np.isnan(log_loss(np.array([1, 0]), np.array([np.nan, 0.3])))


def test_segmentation_evaluation_loss_is_the_training_loss_on_one_batch():
  """Catches an evaluation loss that drifts from training's (another Dice smoothing, a missing BCE
  term, a per-slice instead of a whole-set Dice)."""
  from jaxbrain.metrics import soft_segmentation_loss
  import jax.numpy as jnp

  from jaxbrain.train.steps import segmentation_loss
  rng = np.random.default_rng(0)
  probabilities = rng.uniform(0.01, 0.99, (3, 8, 8))
  true = rng.random((3, 8, 8)) < 0.2
  logits = np.log(probabilities / (1 - probabilities))
  expected = float(segmentation_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(true, jnp.float32)))
  assert soft_segmentation_loss(probabilities, true) == pytest.approx(expected, rel=1e-5)


def test_hausdorff95_on_hand_made_masks():
  """Catches distances between whole masks instead of surfaces (a mask inside a larger one would
  score 0), a one-directional distance (the larger direction must win), the maximum instead of
  the 95th percentile (one far voxel would dominate), ignored spacing, and the empty cases."""
  from jaxbrain.metrics import hausdorff95
  square = np.zeros((40, 40), bool)
  square[10:20, 10:20] = True
  shifted = np.roll(square, 3, axis=1)
  assert hausdorff95(square, shifted) == pytest.approx(3.0)
  assert hausdorff95(square, shifted, spacing=(1.0, 0.5)) == pytest.approx(1.5)
  inner = np.zeros_like(square)
  inner[13:17, 13:17] = True  # 3 to 4 voxels inside the square's boundary
  assert hausdorff95(square, inner) == hausdorff95(inner, square) > 2.5
  far = square.copy()
  far[39, 39] = True  # one stray voxel among 37 boundary voxels: below the 95th percentile
  assert hausdorff95(far, square) < 5
  empty = np.zeros_like(square)
  assert hausdorff95(empty, empty) == 0.0 and hausdorff95(square, empty) == float('inf')
  cube = np.zeros((12, 12, 12), bool)
  cube[3:7, 3:7, 3:7] = True
  assert hausdorff95(cube, np.roll(cube, 2, axis=0)) == pytest.approx(2.0)
