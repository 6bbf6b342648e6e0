"""Grad-CAM on the test patients' tumor slices: the pointing game, and a few heatmap overlays.

Metric `gradcam_pointing_game`: the fraction of tumor slices whose Grad-CAM maximum falls inside
the true tumor mask. Files: `gradcam/<patient>_<slice>.png` (heatmap red-yellow, truth outlined
green) for evenly spaced tumor slices. Classification runs only.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from jaxbrain.evaluators import evenly
from jaxbrain.folders import RunDir
from jaxbrain.metrics import pointing_game
from jaxbrain.overlay import heatmap_overlay
from jaxbrain.data.arrays import TestSlices

SHOWN = 8


def evaluate(test: TestSlices, run: RunDir | None) -> dict:
  if test.heatmaps is None:
    raise ValueError('the gradcam evaluator needs a model with Grad-CAM heatmaps (a classifier)')
  tumor = np.flatnonzero(test.labels == 1)
  size = test.batch_size
  heatmaps = [np.asarray(test.heatmaps(test.images[tumor[s:s + size]])) for s in range(0, len(tumor), size)]
  heatmaps = np.concatenate(heatmaps) if heatmaps else np.zeros((0, 1, 1))
  if run is not None:
    run.gradcam.mkdir(parents=True, exist_ok=True)
    for i in evenly(SHOWN, len(tumor)):
      k = tumor[i]
      Image.fromarray(heatmap_overlay(test.images[k], heatmaps[i], test.true_masks[k])).save(
          run.gradcam / f'{test.patients[k]}_{test.slices[k]}.png')
  return {'gradcam_pointing_game': pointing_game(heatmaps, test.true_masks[tumor])}
