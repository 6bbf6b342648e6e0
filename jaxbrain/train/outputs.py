"""What a run records as it trains and at its end: metrics.jsonl (one line per epoch, counted from
1), TensorBoard event files (scalars, a few overlays per epoch) and PNG plots (curves, confusion
matrix, ROC); where each lives is `folders.RunDir`'s."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from jaxbrain.files import jsonable
from jaxbrain.folders import RunDir
from jaxbrain.inference import model_resolution_masks
from jaxbrain.overlay import captioned, mask_overlay


def read_history(run: RunDir | Path) -> list[dict]:
  """The run's per-epoch records (none before its first epoch)."""
  path = RunDir.of(run).history
  return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()] if path.exists() else []


def tensorboard_tag(name: str) -> str:
  """A metrics.jsonl key as TensorBoard groups it: 'train_loss' -> 'train/loss', 'validation_dice' -> 'eval/dice'."""
  for prefix, group in (('train_', 'train/'), ('validation_', 'eval/')):
    if name.startswith(prefix):
      return group + name[len(prefix):]
  return name


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch whenever it
  is installed, only to accept torch tensors, which jaxbrain never passes, and that import is most of
  a warm run's time to its first step (docs/performance.md). A torch already imported stays."""
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules['torch'] = None  # `import torch` inside tensorboardX raises ImportError, which it expects
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules['torch']
  return SummaryWriter


class RunWriter:
  """Appends per-epoch records and mirrors them to TensorBoard (tensorboardX; no TensorFlow), with
  per-step training loss and learning rate, and the config as hyperparameters at the end.
  TensorBoard's epochs count from 1, as metrics.jsonl's; its steps are optimizer steps."""

  def __init__(self, run: RunDir | Path):
    self.run = RunDir.of(run)
    self.tensorboard = _summary_writer_class()(str(self.run.tensorboard))

  def epoch(self, record: dict, keep_epochs_below: int | None = None) -> None:
    """Adds one epoch's record; on resume, records of epochs being redone are dropped first."""
    history = [r for r in read_history(self.run) if keep_epochs_below is None or r['epoch'] < keep_epochs_below]
    history.append(jsonable(record))
    tmp = self.run.history.with_name(self.run.history.name + '.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in history), encoding='utf-8')
    tmp.replace(self.run.history)
    for name, value in record.items():
      if isinstance(value, (int, float)) and name not in ('epoch', 'step') and value is not None:
        self.tensorboard.add_scalar(tensorboard_tag(name), value, record['epoch'])
    self.tensorboard.flush()

  def steps(self, steps, losses, learning_rates) -> None:
    """Per-step scalars: `train/loss_per_step` and `train/learning_rate` at optimizer steps `steps`."""
    for step, loss, rate in zip(steps, losses, learning_rates):
      self.tensorboard.add_scalar('train/loss_per_step', float(loss), step)
      self.tensorboard.add_scalar('train/learning_rate', float(rate), step)

  def images(self, tag: str, images: np.ndarray, epoch: int) -> None:
    """A few overlay images [N, H, W, 3] uint8 at `epoch` (TensorBoard's IMAGES tab)."""
    if len(images):
      self.tensorboard.add_images(tag, images, epoch, dataformats='NHWC')

  def hyperparameters(self, settings: dict, metrics: dict) -> None:
    """The run's settings beside its final metrics (TensorBoard's HPARAMS tab)."""
    shown = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}
    self.tensorboard.add_hparams(shown, {k: v for k, v in metrics.items() if isinstance(v, float)}, name='.')

  def close(self) -> None:
    self.tensorboard.close()


EPOCH_OVERLAYS = 4  # validation slices shown per epoch in TensorBoard


def overlay_rows(labels: np.ndarray, count: int = EPOCH_OVERLAYS) -> np.ndarray:
  """Positions (into `labels`, the validation slices' labels) of the slices shown every epoch:
  evenly spaced tumor slices, fixed for the run so epochs compare."""
  tumor = np.flatnonzero(labels == 1)
  return tumor[np.linspace(0, len(tumor) - 1, min(count, len(tumor))).round().astype(int)] if len(tumor) else tumor


def epoch_overlays(images: np.ndarray, true_masks: np.ndarray, outputs: dict, rows: np.ndarray) -> np.ndarray:
  """The epoch's view of validation slices `rows`: the true tumor outlined green, the predicted
  mask red (segmentation: the default rule at the model's resolution, as validation scores it
  while the run trains; its own rule is chosen after), the slice's tumor probability below."""
  shown = []
  for row, image, true in zip(rows, images, true_masks):
    predicted = model_resolution_masks(outputs['mask_probability'][row]) if 'mask_probability' in outputs else None
    overlay = mask_overlay(image, predicted, true)
    shown.append(captioned(overlay, f'p(tumor) {float(outputs["probability"][row]):.3f}',
                           'mask' if predicted is not None else None))
  return np.stack(shown) if shown else np.zeros((0, 1, 1, 3), np.uint8)


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_curves(run: RunDir, history: list[dict], eval_keys: tuple[str, ...]) -> None:
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
  fig.savefig(run.plot('curves.png'), dpi=100)
  plt.close(fig)


def plot_classification(run: RunDir, final: dict, labels: np.ndarray, probabilities: np.ndarray) -> None:
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
  fig.savefig(run.plot('confusion_matrix.png'), dpi=100)
  plt.close(fig)

  fpr, tpr = roc_curve(labels, probabilities)
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.plot(fpr, tpr, label=f'AUC {final["roc_auc"]:.3f}')
  ax.plot([0, 1], [0, 1], ':', color='gray')
  ax.set(xlabel='false-positive rate', ylabel='true-positive rate', title='ROC (test)')
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(run.plot('roc.png'), dpi=100)
  plt.close(fig)

