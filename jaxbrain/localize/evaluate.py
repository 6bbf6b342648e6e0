"""`jaxbrain evaluate PRED_DIR... --truth KAGGLE_DIR`: `jaxbrain predict` outputs scored against the
true masks and labels of a kaggle_3m tree; several outputs (say, the five folds' test patients,
each predicted by its own fold's run) are scored as one set of patients.

Segmentation figures are computed at the slices' native 256x256 (predict writes its masks there,
resized from the model's resolution), per patient volume (the patient's slices stacked in slice
order). The slice's true label is whether its true mask has a tumor pixel; detection scores the
`label` column `predict` wrote as it was decided (whatever rule decided it) and ranks slices by
the `probability` column for ROC AUC.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxbrain.flags import INFERENCE
from jaxbrain.data import kaggle3m
from jaxbrain.folders import PredictionDir
from jaxbrain.metrics import (decision_metrics, dice, hausdorff95, iou, segmentation_counts,
                              segmentation_metrics_with_intervals)
from jaxbrain.runs import RunError
from jaxbrain.text import counted

WORST_SHOWN = 5
DETECTION_KEYS = ('accuracy', 'balanced_accuracy', 'roc_auc', 'sensitivity', 'specificity')


def _read_predictions(pred_dir: Path) -> list[dict]:
  path = PredictionDir(pred_dir).predictions
  if not path.is_file():
    raise RunError(f'{pred_dir}: no predictions.csv; give a folder written by `jaxbrain predict`')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  missing = {'path', 'patient', 'slice', 'probability', 'label'} - set(rows[0] if rows else {})
  if missing:
    raise RunError(f'{path}: lacks the columns {", ".join(sorted(missing))}; not a `jaxbrain predict` output')
  return rows


def _truth_masks(rows: list[dict], truth_dir: Path) -> list[Path]:
  """The true mask file of each predicted slice, matched by the slice's file name."""
  by_stem = {record.image_path.stem: record.mask_path for record in kaggle3m.scan(truth_dir)}
  found = []
  for row in rows:
    stem = Path(row['path']).stem
    if stem not in by_stem:
      raise kaggle3m.DataError(f'{row["path"]}: no slice of that name in {truth_dir}; evaluate needs the truth of '
                               'every predicted slice')
    found.append(by_stem[stem])
  return found


def _distribution(per_patient: dict[str, float]) -> dict:
  values = np.array(list(per_patient.values()))
  worst = sorted(per_patient, key=per_patient.get)[:WORST_SHOWN]
  return {'mean': float(values.mean()), 'median': float(np.median(values)),
          'worst': [{'patient': p, 'value': per_patient[p]} for p in worst]}


def _read_outputs(pred_dirs: Sequence[Path]) -> list[tuple[Path, list[dict]]]:
  """Each folder's prediction rows; a patient in two folders, or masks in some folders only, is refused."""
  outputs = [(d, _read_predictions(d)) for d in pred_dirs]
  seen = {}
  for folder, rows in outputs:
    for patient in sorted({r['patient'] for r in rows}):
      if patient in seen:
        raise RunError(f'{seen[patient]} and {folder} both hold patient {patient}; give each patient once')
      seen[patient] = folder
  with_masks = [folder for folder, rows in outputs if 'tumor_pixels' in rows[0]]
  if with_masks and len(with_masks) < len(outputs):
    without = next(folder for folder, rows in outputs if 'tumor_pixels' not in rows[0])
    raise RunError(f'{without} has no masks (predicted without --seg-run) but {with_masks[0]} has; score them apart')
  return outputs


@dataclasses.dataclass
class ScoredSlices:
  """`predict` outputs beside their truth, in the predictions' row order: the rows, the true masks
  [N, 256, 256] bool, the true labels (a true tumor pixel), the `probability` and `label` columns,
  each row's patient, and with masks (predict --seg-run) the predicted masks and each patient's
  rows in slice order (its volume)."""
  rows: list[dict]
  truth: np.ndarray
  labels: np.ndarray
  probabilities: np.ndarray
  decisions: np.ndarray
  patients: np.ndarray
  masks: np.ndarray | None
  volumes: dict[str, list[int]]

  def volume_dice(self) -> dict[str, float]:
    """Each patient's Dice over its stacked volume (1.0 where truth and prediction are both empty)."""
    return {patient: dice(self.masks[rows], self.truth[rows]) for patient, rows in self.volumes.items()}


def score_slices(pred_dirs: Sequence[str | Path] | str | Path, truth_dir: str | Path) -> ScoredSlices:
  """The outputs of `pred_dirs` (pooled, each patient in exactly one) read beside the true masks of
  the kaggle_3m tree `truth_dir`, matched by slice file name."""
  pred_dirs = [Path(pred_dirs)] if isinstance(pred_dirs, (str, Path)) else [Path(d) for d in pred_dirs]
  outputs = _read_outputs(pred_dirs)
  rows = [row for _, part in outputs for row in part]
  truth = np.stack(kaggle3m.map_slices(kaggle3m.read_mask, _truth_masks(rows, Path(truth_dir)))).astype(bool)
  patients = np.array([r['patient'] for r in rows])
  masks, volumes = None, {}
  if 'tumor_pixels' in rows[0]:
    mask_paths = [PredictionDir(folder).mask(name) for folder, part in outputs
                  for name in PredictionDir.output_names([Path(r['path']) for r in part])]
    masks = np.stack(kaggle3m.map_slices(kaggle3m.read_mask, mask_paths)).astype(bool)
    for i in np.lexsort((np.array([int(r['slice']) if r['slice'] else 0 for r in rows]), patients)):
      volumes.setdefault(patients[i], []).append(int(i))
  return ScoredSlices(rows, truth, truth.reshape(len(truth), -1).any(1).astype(int),
                      np.array([float(r['probability']) for r in rows]), np.array([int(r['label']) for r in rows]),
                      patients, masks, volumes)


def evaluate(pred_dirs: Sequence[str | Path] | str | Path, truth_dir: str | Path,
             bootstrap_samples: int = INFERENCE.bootstrap_samples, seed: int = INFERENCE.seed) -> dict:
  """Detection metrics of the slices' decisions as `predict` wrote them (the `label` column: accuracy,
  sensitivity, specificity, ...) and of their ranking by `probability` (ROC AUC); with masks (predict --seg-run),
  per-volume Dice and IoU (mean, median, worst five patients), Dice on tumor slices, the
  false-positive rate on tumor-free slices, their 95% patient-bootstrap intervals (none under
  `metrics.MIN_BOOTSTRAP_PATIENTS` patients), and HD95 per volume (voxels; `metrics.hausdorff95`:
  volumes where exactly one of truth and prediction is empty are counted, not averaged). Several
  `pred_dirs` are pooled, each patient in exactly one of them."""
  scored = score_slices(pred_dirs, truth_dir)
  detection = decision_metrics(scored.labels, scored.decisions, scored.probabilities)
  result = {'slices': len(scored.rows), 'patients': len(set(scored.patients)), 'tumor_slices': int(scored.labels.sum()),
            'detection': {k: detection[k] for k in DETECTION_KEYS}}
  if scored.masks is None:
    return result
  predicted, truth = scored.masks, scored.truth
  per_volume = {name: {'dice': dice(predicted[idx], truth[idx]), 'iou': iou(predicted[idx], truth[idx]),
                       'hd95': hausdorff95(predicted[idx], truth[idx])} for name, idx in scored.volumes.items()}
  overall = segmentation_metrics_with_intervals(segmentation_counts(predicted, truth), scored.patients,
                                                bootstrap_samples, seed)
  finite = [v['hd95'] for v in per_volume.values() if math.isfinite(v['hd95'])]
  result['segmentation'] = {
      'dice_per_volume': _distribution({p: v['dice'] for p, v in per_volume.items()}),
      'iou_per_volume': _distribution({p: v['iou'] for p, v in per_volume.items()}),
      'dice_tumor_slices': overall['dice_tumor_slices'],
      'false_positive_rate': overall['false_positive_rate'],
      'hd95_per_volume': {'mean': float(np.mean(finite)) if finite else float('nan'),
                          'median': float(np.median(finite)) if finite else float('nan'),
                          'volumes_with_one_side_empty': len(per_volume) - len(finite)},
      **{k: v for k, v in overall.items() if k.startswith('confidence_95')},
      'per_volume': per_volume}
  return result


def format_table(result: dict) -> str:
  """The evaluation as text lines for the terminal."""
  lines = [f'{counted(result["slices"], "slice")} of {counted(result["patients"], "patient")} '
           f'({result["tumor_slices"]} with tumor)',
           'slice detection: ' + ', '.join(f'{k} {v:.3f}' for k, v in result['detection'].items())]
  seg = result.get('segmentation')
  if seg:
    ci = seg.get('confidence_95') or {}
    interval = lambda key: f' [{ci[key][0]:.3f}, {ci[key][1]:.3f}]' if key in ci else ''  # noqa: E731
    for key in ('dice_per_volume', 'iou_per_volume'):
      worst = ', '.join(f'{w["patient"]} {w["value"]:.3f}' for w in seg[key]['worst'])
      lines.append(f'{key}: mean {seg[key]["mean"]:.3f}{interval(key)}, median {seg[key]["median"]:.3f}; '
                   f'worst: {worst}')
    hd = seg['hd95_per_volume']
    lines.append(f'dice_tumor_slices {seg["dice_tumor_slices"]:.3f}{interval("dice_tumor_slices")}, false_positive_rate '
                 f'{seg["false_positive_rate"]:.3f}{interval("false_positive_rate")}, hd95_per_volume mean '
                 f'{hd["mean"]:.1f} px, median {hd["median"]:.1f} px ({hd["volumes_with_one_side_empty"]} volumes '
                 'with one side empty)')
    if 'confidence_95_note' in seg:
      lines.append(f'95% intervals {seg["confidence_95_note"]}')
  return '\n'.join(lines)
