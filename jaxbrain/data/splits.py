"""Train/eval splits as index arrays: the report's slice split and leak-free patient splits.

A slice split puts slices of one patient on both sides, so its accuracy is optimistic; the
patient split (the default) keeps every patient on one side only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SPLIT_KINDS = ('patient', 'slice')


@dataclasses.dataclass(frozen=True)
class Split:
  """Indices into the dataset (sorted); `train` and `eval` never overlap."""
  train: np.ndarray
  eval: np.ndarray


def slice_split(n: int, eval_fraction: float = 0.15, seed: int = 0) -> Split:
  """The report's random split of slices (85/15 by default), ignoring patients."""
  order = np.random.default_rng(seed).permutation(n)
  n_eval = int(round(eval_fraction * n))
  return Split(np.sort(order[n_eval:]), np.sort(order[:n_eval]))


def _patient_strata(patients: np.ndarray, labels: np.ndarray, seed: int) -> list[np.ndarray]:
  """Patients with and without tumor slices, each shuffled deterministically."""
  rng = np.random.default_rng(seed)
  unique = np.unique(patients)
  has_tumor = np.array([labels[patients == p].any() for p in unique])
  return [rng.permutation(unique[has_tumor]), rng.permutation(unique[~has_tumor])]


def _indices(patients: np.ndarray, chosen) -> np.ndarray:
  return np.flatnonzero(np.isin(patients, list(chosen)))


def _check_tumor_both_sides(split: Split, labels: np.ndarray) -> Split:
  for name, part in (('train', split.train), ('eval', split.eval)):
    if not labels[part].any():
      raise ValueError(f'the {name} side of the patient split has no tumor slice; too few patients with tumors')
  return split


def patient_split(patients: np.ndarray, labels: np.ndarray, eval_fraction: float = 0.15,
                  seed: int = 0) -> Split:
  """Holds out about `eval_fraction` of the patients, stratified by whether they have a tumor."""
  patients, labels = np.asarray(patients), np.asarray(labels)
  held_out = []
  for stratum in _patient_strata(patients, labels, seed):
    if len(stratum) == 0:
      continue
    n_eval = int(round(eval_fraction * len(stratum)))
    held_out.extend(stratum[:min(max(n_eval, 1), len(stratum) - 1)])
  eval_idx = _indices(patients, held_out)
  train_idx = np.setdiff1d(np.arange(len(patients)), eval_idx)
  return _check_tumor_both_sides(Split(train_idx, eval_idx), labels)


def patient_kfold(patients: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> list[Split]:
  """K folds by patient: each patient is in exactly one eval fold; strata dealt round-robin."""
  patients, labels = np.asarray(patients), np.asarray(labels)
  if k < 2:
    raise ValueError(f'k-fold needs k >= 2, got {k}')
  folds: list[list] = [[] for _ in range(k)]
  dealt = 0
  for stratum in _patient_strata(patients, labels, seed):
    for patient in stratum:
      folds[dealt % k].append(patient)
      dealt += 1
  if dealt < k:
    raise ValueError(f'{k}-fold split needs at least {k} patients, got {dealt}')
  splits = []
  for fold in folds:
    eval_idx = _indices(patients, fold)
    splits.append(_check_tumor_both_sides(Split(np.setdiff1d(np.arange(len(patients)), eval_idx), eval_idx), labels))
  return splits


def make_split(kind: str, patients: np.ndarray, labels: np.ndarray, *, eval_fraction: float = 0.15,
               fold: int | None = None, num_folds: int = 5, seed: int = 0) -> Split:
  """Dispatches on `kind` ('patient' or 'slice'); `fold` selects a patient k-fold instead."""
  if kind not in SPLIT_KINDS:
    raise ValueError(f'unknown split {kind!r}; choose one of {SPLIT_KINDS}')
  if kind == 'slice':
    if fold is not None:
      raise ValueError('--fold needs the patient split')
    return slice_split(len(labels), eval_fraction, seed)
  if fold is None:
    return patient_split(patients, labels, eval_fraction, seed)
  if not 0 <= fold < num_folds:
    raise ValueError(f'fold must be in [0, {num_folds}), got {fold}')
  return patient_kfold(patients, labels, num_folds, seed)[fold]
