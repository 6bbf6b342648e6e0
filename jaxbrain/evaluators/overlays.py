"""Overlays of the test patients' predicted masks: `overlays/<patient>_<slice>.png` (the mask the
run's chosen rule makes at 256x256, as `jaxbrain predict` writes it, red; truth outlined green) for
evenly spaced tumor slices and a few tumor-free ones. Segmentation runs only; adds no metric."""
from __future__ import annotations

import numpy as np
from PIL import Image

from jaxbrain.evaluators import evenly
from jaxbrain.folders import RunDir
from jaxbrain.overlay import mask_overlay
from jaxbrain.data.arrays import TestSlices

TUMOR_SHOWN, EMPTY_SHOWN = 8, 4


def evaluate(test: TestSlices, run: RunDir | None) -> dict:
  if run is None:
    return {}
  run.overlays.mkdir(parents=True, exist_ok=True)
  has_tumor = test.true_masks.reshape(len(test.true_masks), -1).any(1)
  for group, count in ((np.flatnonzero(has_tumor), TUMOR_SHOWN), (np.flatnonzero(~has_tumor), EMPTY_SHOWN)):
    for k in group[evenly(count, len(group))]:
      Image.fromarray(mask_overlay(test.images[k], test.outputs['mask'][k], test.true_masks[k])).save(
          run.overlays / f'{test.patients[k]}_{test.slices[k]}.png')
  return {}
