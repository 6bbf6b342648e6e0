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
