"""Prediction on scans with trained runs: tumor probability per slice, tumor masks, overlays.

`predict(inputs, run_dir, seg_run_dir, out_dir)` backs `jaxbrain predict`. Inputs are image
files or folders (.tif/.png; a kaggle_3m patient folder or a whole tree; `_mask` files are
ignored). Every input is decoded and checked before anything is written.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from jaxbrain.data import kaggle3m
from jaxbrain.data.transforms import Preprocess, preprocess
from jaxbrain.localize.gradcam import gradcam
from jaxbrain.localize.overlay import heatmap_overlay, mask_overlay
from jaxbrain.models import create_model
from jaxbrain.models.resunet import ResUNet
from jaxbrain.train.config import TrainConfig


class RunError(ValueError):
  """A run directory that cannot be used for this purpose."""


@dataclasses.dataclass
class LoadedRun:
  config: TrainConfig
  model: Any
  variables: dict
  preprocess: Preprocess


def load_run(run_dir: str | Path, task: str) -> LoadedRun:
  """The model and its best (else last) checkpointed variables from a run directory of `task`."""
  run_dir = Path(run_dir)
  header_path = run_dir / 'config.json'
  if not header_path.is_file():
    raise RunError(f'{run_dir}: not a jaxbrain run directory (no config.json)')
  fields = json.loads(header_path.read_text())['config']
  fields['head_hidden'] = tuple(fields['head_hidden'])
  config = TrainConfig(**fields)
  if config.task != task:
    wanted = {'classify': 'a classification run (--run)', 'segment': 'a segmentation run (--seg-run)'}[task]
    raise RunError(f'{run_dir}: is a {config.task} run, but {wanted} is needed here')
  for which in ('best', 'last'):
    folder = run_dir / 'checkpoints' / which
    steps = sorted(int(p.name) for p in folder.glob('*') if p.name.isdigit()) if folder.is_dir() else []
    if steps:
      state = ocp.StandardCheckpointer().restore((folder / str(steps[-1]) / 'state').resolve())
      break
  else:
    raise RunError(f'{run_dir}: has no complete checkpoint (did the run finish at least one epoch?)')
  if task == 'classify':
    model = create_model(config.arch, num_classes=2, head_hidden=config.head_hidden, dropout_rate=config.dropout_rate)
  else:
    model = ResUNet(width=config.unet_width, encoder='residual' if config.arch == 'resunet' else config.arch)
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  return LoadedRun(config, model, variables, Preprocess.from_name(config.preprocess, config.image_size))


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
  """Image files named or found (recursively) under folders, without `_mask` files, sorted."""
  found = []
  for path in map(Path, paths):
    if path.is_dir():
      found += [p for p in path.rglob('*') if p.suffix.lower() in kaggle3m.IMAGE_EXTENSIONS]
    elif path.is_file():
      found.append(path)
    else:
      raise kaggle3m.DataError(f'{path}: no such file or folder')
  images = sorted({p for p in found if not p.stem.endswith('_mask')})
  if not images:
    raise kaggle3m.DataError(f'no slice images (.tif/.png, not _mask) in {", ".join(map(str, paths))}')
  return images


def slice_identity(path: Path) -> tuple[str, int | None]:
  """(patient, slice) from a kaggle_3m file name; else (its folder's name, None)."""
  match = kaggle3m.SLICE_FILE.match(path.stem)
  if match:
    return match['case'].rsplit('_', 1)[0], int(match['slice'])
  return path.parent.name, None


def _check_output_dir(out_dir: Path, inputs: list[Path]) -> None:
  out = out_dir.resolve()
  for path in inputs:
    if out == path.parent.resolve() or out in path.resolve().parents:
      raise RunError(f'{out_dir}: holds input files (e.g. {path}); choose an output folder outside the inputs')


class Scorer:
  """A classifier (and optional segmenter) run, jitted once, scoring uint8 slices [N, 256, 256, 3].

  `score` returns (tumor probability [N], Grad-CAM heatmaps [N, h, w], masks [N, 256, 256] or None).
  """

  def __init__(self, run_dir: str | Path, seg_run_dir: str | Path | None = None, batch_size: int = 16):
    self.classifier = load_run(run_dir, 'classify')
    self.segmenter = load_run(seg_run_dir, 'segment') if seg_run_dir else None
    self.batch_size = batch_size
    self._classify = jax.jit(self._classify_batch)
    self._segment = jax.jit(self._segment_batch)

  def _classify_batch(self, batch):
    run = self.classifier
    x, _ = preprocess(run.preprocess, None, batch)
    probability = jax.nn.softmax(run.model.apply(run.variables, x))[:, 1]
    return probability, gradcam(run.model, run.variables, x)

  def _segment_batch(self, batch):
    run = self.segmenter
    x, _ = preprocess(run.preprocess, None, batch)
    logits = run.model.apply(run.variables, x)
    return jax.image.resize(logits, (len(batch), *batch.shape[1:3]), 'bilinear') > 0

  def score(self, images: np.ndarray):
    probabilities, heatmaps, masks = [], [], []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      padded = np.concatenate([chunk, np.repeat(chunk[:1], self.batch_size - len(chunk), 0)])
      probability, heatmap = self._classify(padded)
      probabilities.append(np.asarray(probability)[:len(chunk)])
      heatmaps.append(np.asarray(heatmap)[:len(chunk)])
      if self.segmenter:
        masks.append(np.asarray(self._segment(padded))[:len(chunk)])
    return np.concatenate(probabilities), np.concatenate(heatmaps), np.concatenate(masks) if masks else None


def predict(inputs: Sequence[str | Path], run_dir: str | Path, out_dir: str | Path, seg_run_dir: str | Path | None = None,
            batch_size: int = 16, progress: bool = True) -> dict:
  """Scores every input slice; writes predictions.csv, summary.json, masks/ and overlays/ under out_dir."""
  scorer = Scorer(run_dir, seg_run_dir, batch_size)
  paths = collect_inputs(inputs)
  out_dir = Path(out_dir)
  _check_output_dir(out_dir, paths)
  images = np.stack(kaggle3m.map_slices(kaggle3m.read_image, paths, progress='reading' if progress else None))
  chunks = range(0, len(images), 16 * batch_size)
  if progress:
    from tqdm import tqdm
    chunks = tqdm(chunks, desc='predicting', unit='chunk')
  scored = [scorer.score(images[s:s + 16 * batch_size]) for s in chunks]
  probabilities = np.concatenate([p for p, _, _ in scored])
  heatmaps = np.concatenate([h for _, h, _ in scored])
  masks = np.concatenate([m for _, _, m in scored]) if seg_run_dir else None

  (out_dir / 'overlays').mkdir(parents=True, exist_ok=True)
  if masks is not None:
    (out_dir / 'masks').mkdir(exist_ok=True)
  rows, summary = [], {}
  for i, path in enumerate(paths):
    patient, number = slice_identity(path)
    label = int(probabilities[i] >= 0.5)
    row = {'path': str(path), 'patient': patient, 'slice': number, 'probability': float(probabilities[i]),
           'label': label}
    entry = summary.setdefault(patient, {'slices': 0, 'slices_with_tumor': []})
    entry['slices'] += 1
    if label:
      entry['slices_with_tumor'].append(number if number is not None else path.name)
    if masks is not None:
      pixels = int(masks[i].sum())
      row['tumor_pixels'] = pixels
      entry.setdefault('tumor_area_pixels', {})[str(number if number is not None else path.name)] = pixels
      entry['volume_voxels'] = entry.get('volume_voxels', 0) + pixels
      Image.fromarray(masks[i].astype(np.uint8) * 255).save(out_dir / 'masks' / f'{path.stem}_mask.png')
      overlay = mask_overlay(images[i], masks[i])
    else:
      overlay = heatmap_overlay(images[i], heatmaps[i])
    Image.fromarray(overlay).save(out_dir / 'overlays' / f'{path.stem}_overlay.png')
    rows.append(row)
  with open(out_dir / 'predictions.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  (out_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
  return summary
