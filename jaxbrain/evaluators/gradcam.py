"""Grad-CAM on the test patients' tumor slices: the pointing game, and a few heatmap overlays.

Metric `gradcam_pointing_game`: the fraction of tumor slices whose Grad-CAM maximum falls inside
the true tumor mask. Files: `gradcam/<patient>_<slice>.png` (heatmap red-yellow, truth outlined
green) for evenly spaced tumor slices. Classification runs only.
"""
from __future__ import annotations

import jax
import numpy as np
from PIL import Image

from jaxbrain.data.transforms import apply_preprocessing
from jaxbrain.evaluators import evenly
from jaxbrain.folders import RunDir
from jaxbrain.metrics import pointing_game
from jaxbrain.models.gradcam import gradcam
from jaxbrain.overlay import heatmap_overlay

SHOWN = 8


def evaluate(task, variables: dict, indices: np.ndarray, outputs: dict, run: RunDir | None) -> dict:
  data, batch_size = task.data, task.config.batch_size
  cam = jax.jit(lambda x: gradcam(task.model, variables, apply_preprocessing(task.preprocessing, None, x)[0]))
  tumor_slices = indices[data.label[indices] == 1]
  heatmaps = [np.asarray(cam(data.image[tumor_slices[s:s + batch_size]]))
              for s in range(0, len(tumor_slices), batch_size)]
  heatmaps = np.concatenate(heatmaps) if heatmaps else np.zeros((0, 1, 1))
  if run is not None:
    folder = run.gradcam
    folder.mkdir(parents=True, exist_ok=True)
    for i in evenly(SHOWN, len(tumor_slices)):
      k = tumor_slices[i]
      Image.fromarray(heatmap_overlay(data.image[k], heatmaps[i], data.mask[k])).save(
          folder / f'{data.patient[k]}_{data.slice[k]}.png')
  return {'gradcam_pointing_game': pointing_game(heatmaps, data.mask[tumor_slices])}
