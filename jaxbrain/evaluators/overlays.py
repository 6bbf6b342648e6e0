"""Overlays of the test patients' predicted masks: `overlays/<patient>_<slice>.png` (the mask the
run's chosen rule makes at 256x256, as `jaxbrain predict` writes it, red; truth outlined green) for
evenly spaced tumor slices and a few tumor-free ones. Segmentation runs only; adds no metric."""
from __future__ import annotations

import numpy as np
from PIL import Image

from jaxbrain.evaluators import evenly
from jaxbrain.folders import RunDir
from jaxbrain.overlay import mask_overlay

TUMOR_SHOWN, EMPTY_SHOWN = 8, 4


def evaluate(task, variables: dict, indices: np.ndarray, outputs: dict, run: RunDir | None) -> dict:
  if run is None:
    return {}
  data, predicted = task.data, outputs['mask']
  true = data.mask[indices] > 0
  folder = run.overlays
  folder.mkdir(parents=True, exist_ok=True)
  has_tumor = true.reshape(len(true), -1).any(1)
  for group, count in ((np.flatnonzero(has_tumor), TUMOR_SHOWN), (np.flatnonzero(~has_tumor), EMPTY_SHOWN)):
    for i in group[evenly(count, len(group))]:
      k = indices[i]
      Image.fromarray(mask_overlay(data.image[k], predicted[i], true[i])).save(
          folder / f'{data.patient[k]}_{data.slice[k]}.png')
  return {}
