"""From a segmenter's pixel probabilities to a patient's tumor masks, by a rule.

A `MaskRule` is a pixel probability threshold, the removal of in-plane connected components
smaller than `min_pixels`, and the removal of tumors seen on one slice only (a 3D connected
component of the patient's stack that lies within a single slice), with or without test-time flip
averaging. `apply_rule` applies it per patient, since the 3D step needs the patient's whole stack;
a run's rule is chosen on its validation patients in `decisions` (`choose_rule`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from jaxbrain.data.arrays import patient_stacks

IN_PLANE = np.array([np.zeros((3, 3)), np.ones((3, 3)), np.zeros((3, 3))], bool)  # 8-connected, never across slices
ACROSS_SLICES = np.ones((3, 3, 3), bool)  # 26-connected: a tumor touching the next slice diagonally continues there


PIXEL_THRESHOLD = 0.5  # the default rule: a pixel is tumor when its probability is above this


@dataclasses.dataclass(frozen=True)
class MaskRule:
  """How pixel probabilities become masks. The defaults (a pixel is tumor above 0.5, nothing
  removed, no flip averaging) are what a run without a stored rule gets."""
  threshold: float = PIXEL_THRESHOLD  # a pixel is tumor when its probability is above this
  min_pixels: int = 0  # in-plane 8-connected components with fewer pixels are removed
  drop_single_slice: bool = False  # remove 26-connected 3D components that lie on one slice only
  flip_average: bool = False  # pixel probabilities averaged with those of the mirrored slice

  @classmethod
  def from_json(cls, record: dict | None) -> MaskRule:
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (record or {}).items() if k in fields})

  def in_words(self) -> str:
    """The rule as people read it on a page."""
    steps = ['each pixel\'s probability averaged with the mirrored slice\'s'] * self.flip_average
    steps.append(f'a pixel is tumor where its probability is above {self.threshold:g}')
    steps += [f'tumor patches of fewer than {self.min_pixels} pixels removed'] * (self.min_pixels > 1)
    steps += ['tumor seen on one slice only removed'] * self.drop_single_slice
    return '; '.join(steps)


def remove_small_components(masks: np.ndarray, min_pixels: int) -> np.ndarray:
  """Binary masks [N, H, W] without their in-plane 8-connected components of fewer than `min_pixels`."""
  if min_pixels <= 1 or not masks.any():
    return masks
  labels, _ = ndimage.label(masks, IN_PLANE)
  sizes = np.bincount(labels.ravel())
  keep = sizes >= min_pixels
  keep[0] = False
  return keep[labels]


def remove_single_slice_components(masks: np.ndarray) -> np.ndarray:
  """One patient's binary masks [N, H, W] (slices in order) without the 26-connected 3D components
  that lie on one slice only. A stack of one slice keeps its masks (there is no neighbour to ask)."""
  if len(masks) < 2 or not masks.any():
    return masks
  labels, count = ndimage.label(masks, ACROSS_SLICES)
  spans = ndimage.find_objects(labels, count)
  keep = np.array([False] + [span[0].stop - span[0].start > 1 for span in spans])
  return keep[labels]


def apply_rule(rule: MaskRule, probabilities: np.ndarray, patients: np.ndarray) -> np.ndarray:
  """Masks [N, H, W] bool from pixel probabilities [N, H, W] (flip-averaged already when the rule
  says so) of slices grouped by patient in slice order (`patients` [N]: consecutive equal entries
  form a stack)."""
  masks = remove_small_components(np.asarray(probabilities) > rule.threshold, rule.min_pixels)
  if rule.drop_single_slice:
    masks = masks.copy()
    for span in patient_stacks(patients):
      masks[span] = remove_single_slice_components(masks[span])
  return masks
