"""The dataset as NumPy arrays in host memory: what batching, splits, training and the evaluators take."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class SliceArrays:
  """The whole dataset in host memory, sorted by (patient, slice).

  image: [N, 256, 256, 3] uint8; mask: [N, 256, 256] uint8 (1 = tumor); label: [N] int32;
  patient, institution: [N] str; slice: [N] int32; path: [N] str, the image file relative to kaggle_3m.
  """
  image: np.ndarray
  mask: np.ndarray
  label: np.ndarray
  patient: np.ndarray
  institution: np.ndarray
  slice: np.ndarray
  path: np.ndarray

  def __len__(self) -> int:
    return len(self.label)


@dataclasses.dataclass(frozen=True)
class TestSlices:
  """What an evaluator is handed (as big_vision hands its evaluators a narrow predict function): the
  test slices as the data holds them, the selected checkpoint's outputs on them (`mask`: the masks
  the run's chosen rule makes, for a segmenter), and `heatmaps` (uint8 slices -> Grad-CAM [n, h, w];
  None for a model without them), called in batches of `batch_size`."""
  images: np.ndarray  # [N, 256, 256, 3] uint8
  true_masks: np.ndarray  # [N, 256, 256] bool
  labels: np.ndarray  # [N] 1 = tumor
  patients: np.ndarray  # [N]
  slices: np.ndarray  # [N] slice numbers
  outputs: dict
  heatmaps: Callable | None
  batch_size: int


def patient_stacks(patients: np.ndarray) -> list[slice]:
  """The runs of equal consecutive entries of `patients` [N]: the stacks of slices the 3D step reads."""
  patients = np.asarray(patients)
  starts = np.flatnonzero(np.r_[True, patients[1:] != patients[:-1]])
  return [slice(a, b) for a, b in zip(starts, np.r_[starts[1:], len(patients)])]


def with_neighbours(images: np.ndarray, stacks, count: int) -> np.ndarray:
  """Slices [N, H, W, C] in slice order -> [N, H, W, (2 * count + 1) * C]: each slice with `count`
  neighbours on either side as extra channels (2.5D input), ordered from the slice `count` below
  to the one `count` above, the slice itself in the middle. `stacks` [N] groups slices into
  volumes (consecutive equal entries): neighbours never cross a volume, and past its first or last
  slice that end slice repeats. `count` 0 returns `images` itself."""
  if not count:
    return images
  starts, ends = _volume_bounds(stacks)
  first, last = np.repeat(starts, ends - starts), np.repeat(ends - 1, ends - starts)
  rows = np.arange(len(first))
  return np.concatenate([images[np.clip(rows + offset, first, last)] for offset in range(-count, count + 1)], axis=-1)


def scaled_per_volume(images: np.ndarray, stacks, percentile: float = 99.0, target: float = 200.0) -> np.ndarray:
  """uint8 slices [N, H, W, C] -> the same with each volume's channels rescaled so that the
  `percentile` of the channel's non-zero pixels (the head; the background stays 0) lands at
  `target`, clipped to 255. Scanners and protocols differ in intensity scale (some patients' scans
  are a third as bright as most): the model then sees every volume on one scale. `stacks` [N] groups
  slices into volumes (consecutive equal entries); a channel that is all 0 stays 0."""
  scaled = np.empty_like(images)
  for start, end in zip(*_volume_bounds(stacks)):
    volume = images[start:end].astype(np.float32)
    for c, value in enumerate(head_percentiles(volume, percentile)):
      if value == value:  # not nan: the channel has a head
        volume[..., c] *= target / value
    scaled[start:end] = np.clip(np.rint(volume), 0, 255).astype(np.uint8)
  return scaled


def _volume_bounds(stacks) -> tuple[np.ndarray, np.ndarray]:
  """Each volume's first row and one past its last, for `stacks` [N] grouping rows into volumes
  (consecutive equal entries)."""
  stacks = np.asarray(stacks)
  starts = np.flatnonzero(np.r_[True, stacks[1:] != stacks[:-1]])
  return starts, np.r_[starts[1:], len(stacks)]


def head_percentiles(images: np.ndarray, percentile: float = 99.0) -> list[float]:
  """The `percentile` of each channel's non-zero pixels (the head) of `images` [..., C]; nan for a
  channel that is all 0."""
  return [np.percentile(c[c > 0], percentile) if (c > 0).any() else np.nan for c in np.moveaxis(images, -1, 0)]


def segmenter_inputs(images: np.ndarray, stacks, context_slices: int = 0, scale_volumes: bool = False) -> np.ndarray:
  """What a segmenter takes for slices `images` [N, H, W, 3] of volumes `stacks`: each volume on
  one intensity scale (`scaled_per_volume`) when asked, then each slice with its neighbours
  (`with_neighbours`). Training and scoring both call this, so they cannot differ."""
  return with_neighbours(scaled_per_volume(images, stacks) if scale_volumes else images, stacks, context_slices)
