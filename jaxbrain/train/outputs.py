"""What a run leaves in its directory: config.json, split.json, metrics.jsonl (one line per epoch,
counted from 1), metrics.json (final), TensorBoard event files, and PNG plots (curves, confusion
matrix, ROC)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.floating, float)):
    return None if math.isnan(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_json(path: Path, value) -> None:
  """Writes atomically (temp file + rename): a reader never sees half a file."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(_jsonable(value), indent=2) + '\n')
  tmp.replace(path)


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = ()) -> None:
  """Writes rows (columns: the first row's keys, else `columns`) to a temporary name and renames it:
  a full disk or a crash leaves no half-written file."""
  tmp = path.with_name(path.name + '.tmp')
  try:
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(columns))
      writer.writeheader()
      writer.writerows(rows)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


def read_history(run_dir: Path) -> list[dict]:
  path = run_dir / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class RunWriter:
  """Appends per-epoch records and mirrors scalars to TensorBoard (tensorboardX; no TensorFlow)."""

  def __init__(self, run_dir: Path):
    from tensorboardX import SummaryWriter

    self.run_dir = run_dir
    self.tensorboard = SummaryWriter(str(run_dir / 'tensorboard'))

  def epoch(self, record: dict, keep_epochs_below: int | None = None) -> None:
    """Adds one epoch's record; on resume, records of epochs being redone are dropped first."""
    history = [r for r in read_history(self.run_dir) if keep_epochs_below is None or r['epoch'] < keep_epochs_below]
    history.append(_jsonable(record))
    tmp = self.run_dir / 'metrics.jsonl.tmp'
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in history))
    tmp.replace(self.run_dir / 'metrics.jsonl')
    for name, value in record.items():
      if isinstance(value, (int, float)) and name not in ('epoch', 'step') and value is not None:
        self.tensorboard.add_scalar(name, value, record['epoch'])
    self.tensorboard.flush()

  def close(self) -> None:
    self.tensorboard.close()


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_curves(run_dir: Path, history: list[dict], eval_keys: tuple[str, ...]) -> None:
  """curves.png: training loss, and the training metric with the main validation metrics, per epoch."""
  plt = _pyplot()
  epochs = [r['epoch'] for r in history]
  fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
  ax_loss.plot(epochs, [r['train_loss'] for r in history], 'o-', label='train')
  ax_loss.set(xlabel='epoch', ylabel='loss', title='training loss')
  train_keys = [k for k in history[0] if k.startswith('train_') and k != 'train_loss'] if history else []
  for key in train_keys + [f'validation_{k}' for k in eval_keys]:
    ax_metric.plot(epochs, [r.get(key) for r in history], 'o-' if key.startswith('train') else 's--', label=key)
  ax_metric.set(xlabel='epoch', title='metrics', ylim=(0, 1.02))
  for ax in (ax_loss, ax_metric):
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(run_dir / 'curves.png', dpi=100)
  plt.close(fig)


def plot_classification(run_dir: Path, final: dict, labels: np.ndarray, probabilities: np.ndarray) -> None:
  """confusion_matrix.png and roc.png of the test patients."""
  from jaxbrain.metrics import roc_curve

  plt = _pyplot()
  matrix = np.array(final['confusion_matrix'])
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.imshow(matrix, cmap='Blues')
  for (i, j), count in np.ndenumerate(matrix):
    ax.text(j, i, str(count), ha='center', va='center', color='black', fontsize=14)
  ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=['no tumor', 'tumor'], yticklabels=['no tumor', 'tumor'],
         xlabel='predicted', ylabel='true', title=f'test accuracy {final["accuracy"]:.3f}')
  fig.tight_layout()
  fig.savefig(run_dir / 'confusion_matrix.png', dpi=100)
  plt.close(fig)

  fpr, tpr = roc_curve(labels, probabilities)
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.plot(fpr, tpr, label=f'AUC {final["roc_auc"]:.3f}')
  ax.plot([0, 1], [0, 1], ':', color='gray')
  ax.set(xlabel='false-positive rate', ylabel='true-positive rate', title='ROC (test)')
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(run_dir / 'roc.png', dpi=100)
  plt.close(fig)


def _evenly(count: int, total: int) -> np.ndarray:
  return np.linspace(0, total - 1, min(count, total)).astype(int) if total else np.zeros(0, int)


def save_heatmaps(folder: Path, images: np.ndarray, heatmaps: np.ndarray, true: np.ndarray, names: list[str],
                  count: int = 8) -> None:
  """Grad-CAM overlays (heatmap red-yellow, true tumor outlined green) of evenly spaced tumor slices."""
  from PIL import Image

  from jaxbrain.localize.overlay import heatmap_overlay

  folder.mkdir(parents=True, exist_ok=True)
  for i in _evenly(count, len(images)):
    Image.fromarray(heatmap_overlay(images[i], heatmaps[i], true[i])).save(folder / f'{names[i]}.png')


def save_overlays(folder: Path, images: np.ndarray, predicted: np.ndarray, true: np.ndarray, names: list[str],
                  tumor_count: int = 8, empty_count: int = 4) -> None:
  """PNG overlays (prediction red, truth outlined green) of evenly spaced test slices: some with
  tumor, some without."""
  from PIL import Image

  from jaxbrain.localize.overlay import mask_overlay

  folder.mkdir(parents=True, exist_ok=True)
  has_tumor = true.reshape(len(true), -1).any(1)
  for group, count in ((np.flatnonzero(has_tumor), tumor_count), (np.flatnonzero(~has_tumor), empty_count)):
    for i in group[_evenly(count, len(group))]:
      Image.fromarray(mask_overlay(images[i], predicted[i], true[i])).save(folder / f'{names[i]}.png')
