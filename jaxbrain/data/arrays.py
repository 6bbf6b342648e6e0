"""The dataset as NumPy arrays in host memory: what batching, splits and training take."""
from __future__ import annotations

import dataclasses

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


def with_neighbours(images: np.ndarray, stacks, count: int) -> np.ndarray:
  """Slices [N, H, W, C] in slice order -> [N, H, W, (2 * count + 1) * C]: each slice with `count`
  neighbours on either side as extra channels (2.5D input), ordered from the slice `count` below
  to the one `count` above, the slice itself in the middle. `stacks` [N] groups slices into
  volumes (consecutive equal entries): neighbours never cross a volume, and past its first or last
  slice that end slice repeats. `count` 0 returns `images` itself."""
  if not count:
    return images
  stacks = np.asarray(stacks)
  starts = np.flatnonzero(np.r_[True, stacks[1:] != stacks[:-1]])
  ends = np.r_[starts[1:], len(stacks)] - 1
  first, last = np.repeat(starts, ends - starts + 1), np.repeat(ends, ends - starts + 1)
  rows = np.arange(len(stacks))
  return np.concatenate([images[np.clip(rows + offset, first, last)] for offset in range(-count, count + 1)], axis=-1)
