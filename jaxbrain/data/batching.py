"""Host-side NumPy batches: shuffled fixed-size training batches and complete evaluation passes.

Every batch is a dict with `image` [B, 256, 256, 3] uint8, `mask` [B, 256, 256] uint8, `label` [B]
int32, `patient` [B] str, `index` [B] int64 (position in the dataset) and, for evaluation,
`valid` [B] bool: the last partial batch is padded to full size so that jitted steps see one shape,
and `valid` marks the padding so no example is dropped or counted twice.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from jaxbrain.data.arrays import SliceArrays
from jaxbrain.errors import ConfigError

Batch = dict[str, np.ndarray]


def check_batch_size(batch_size: int, num_devices: int) -> None:
  """A global batch must split evenly across the data-parallel devices."""
  if batch_size < 1 or batch_size % num_devices:
    raise ConfigError(f'batch size {batch_size} must be a positive multiple of the {num_devices} devices')


def _gather(data: SliceArrays, indices: np.ndarray) -> Batch:
  return {
      'image': data.image[indices],
      'mask': data.mask[indices],
      'label': data.label[indices],
      'patient': data.patient[indices],
      'index': indices.astype(np.int64),
  }


def epoch_order(indices: np.ndarray, seed: int, epoch: int, is_tumor: np.ndarray | None = None,
                tumor_share: float = 0.0) -> np.ndarray:
  """The shuffled training order of one epoch: a pure function of (seed, epoch), so resuming is exact.

  `tumor_share` 0: every one of `indices` once. Above 0 (`is_tumor`: per dataset index): every
  tumor slice of `indices` and `tumor_free_per_epoch` tumor-free ones, drawn afresh each epoch, so
  that tumor slices make up at least that share of the epoch; every epoch has the same length.
  """
  indices = np.asarray(indices)
  rng = np.random.default_rng([seed, epoch])
  if not tumor_share:
    return rng.permutation(indices)
  tumor, free = indices[is_tumor[indices] > 0], indices[is_tumor[indices] == 0]
  drawn = rng.choice(free, tumor_free_per_epoch(len(tumor), len(free), tumor_share), replace=False)
  return rng.permutation(np.concatenate([tumor, drawn]))


def epoch_length(indices: np.ndarray, is_tumor: np.ndarray | None = None, tumor_share: float = 0.0) -> int:
  """How many slices every epoch of `epoch_order` holds."""
  if not tumor_share:
    return len(indices)
  tumor = int(np.count_nonzero(is_tumor[np.asarray(indices)]))
  return tumor + tumor_free_per_epoch(tumor, len(indices) - tumor, tumor_share)


def tumor_free_per_epoch(tumor: int, free: int, tumor_share: float) -> int:
  """How many of `free` tumor-free slices an epoch with `tumor` tumor slices draws so that tumor
  slices make up at least `tumor_share` (all of them when the natural share is already higher)."""
  if not tumor:
    raise ConfigError(f'--tumor-share {tumor_share}: the training patients have no tumor slices to make it up')
  return min(free, round(tumor * (1 - tumor_share) / tumor_share))


def train_index_batches(indices: np.ndarray, batch_size: int, seed: int, epoch: int,
                        start_batch: int = 0) -> Iterator[np.ndarray]:
  """Dataset indices of each full batch of a shuffled epoch; the remainder (< batch_size) sits
  this epoch out. `start_batch` skips batches already consumed, for resuming mid-epoch."""
  order = epoch_order(indices, seed, epoch)
  for b in range(start_batch, len(order) // batch_size):
    yield order[b * batch_size:(b + 1) * batch_size]


def dispatch_plan(steps: int, per_dispatch: int, start: int = 0) -> list[tuple[int, int]]:
  """(first batch, batch count) of each dispatch of an epoch of `steps` batches from `start`:
  `per_dispatch` batches at a time from multiples of it, single batches for the rest (the tail of
  the epoch, or the way to the next multiple when resuming off one). A run resumed at a dispatch
  boundary makes the same dispatches as one never interrupted."""
  plan, batch = [], start
  while batch < steps:
    count = per_dispatch if batch % per_dispatch == 0 and batch + per_dispatch <= steps else 1
    plan.append((batch, count))
    batch += count
  return plan


def train_batches(data: SliceArrays, indices: np.ndarray, batch_size: int, seed: int, epoch: int,
                  start_batch: int = 0) -> Iterator[Batch]:
  """`train_index_batches` gathered into image batches."""
  for chunk in train_index_batches(indices, batch_size, seed, epoch, start_batch):
    yield _gather(data, chunk)


def eval_index_batches(indices: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(indices padded to batch_size, valid mask) covering every index exactly once, in order."""
  indices = np.asarray(indices)
  for start in range(0, len(indices), batch_size):
    chunk = indices[start:start + batch_size]
    valid = np.arange(batch_size) < len(chunk)
    yield np.concatenate([chunk, np.full(batch_size - len(chunk), chunk[0], chunk.dtype)]), valid


def eval_batches(data: SliceArrays, indices: np.ndarray, batch_size: int) -> Iterator[Batch]:
  """Every example exactly once, in order; the last batch padded and marked by `valid`."""
  for padded, valid in eval_index_batches(indices, batch_size):
    batch = _gather(data, padded)
    batch['valid'] = valid
    yield batch
