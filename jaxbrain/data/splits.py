"""Train / validation / test splits as index arrays: leak-free patient splits and the report's slice split.

Three sides, three jobs: `train` fits the weights, `validation` makes every choice (the selected
checkpoint, thresholds, recipes), `test` is evaluated once at the end and gives the reported
numbers. A slice split puts slices of one patient on several sides, so its numbers are optimistic;
the patient split (the default) keeps every patient on one side only.

Stratification: patients are ordered by their number of tumor slices (tumor-free patients first,
ties in seeded random order) and the held-out sides are drawn by systematic sampling over that
order, so every side spans small and large tumors. In the LGG set every patient has tumor
slices, so this stratifies by tumor burden.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxbrain.errors import ConfigError

SPLIT_KINDS = ('patient', 'slice')
SIDES = ('train', 'validation', 'test')
HELD_OUT_FRACTION = 0.15  # of all patients (or slices), for validation and for test each
NUM_FOLDS = 5  # the k-fold patient split that `--fold` draws from


@dataclasses.dataclass(frozen=True)
class Split:
  """Sorted indices into the dataset; the three sides never overlap."""
  train: np.ndarray
  validation: np.ndarray
  test: np.ndarray

  def sides(self) -> dict[str, np.ndarray]:
    return {side: getattr(self, side) for side in SIDES}


def _systematic(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
  """k distinct positions spread evenly over range(n) from a random offset (k <= n)."""
  return np.floor((np.arange(k) + rng.random()) * n / k).astype(int)


def _held_out_count(n: int, fraction: float) -> int:
  return max(1, int(round(fraction * n)))


def slice_split(n: int, held_out_fraction: float = HELD_OUT_FRACTION, seed: int = 0) -> Split:
  """The report's random 85/15 split of slices (test = the 15%), with another 15% of all slices
  carved from the 85 for validation: 70/15/15. Patients leak across sides."""
  order = np.random.default_rng(seed).permutation(n)
  k = int(round(held_out_fraction * n))
  return Split(np.sort(order[2 * k:]), np.sort(order[k:2 * k]), np.sort(order[:k]))


def _ordered_patients(patients: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
  """Unique patients ordered by tumor-slice count, ties in seeded random order."""
  unique = np.random.default_rng(seed).permutation(np.unique(patients))
  counts = np.array([labels[patients == p].sum() for p in unique])
  return unique[np.argsort(counts, kind='stable')]


def _indices(patients: np.ndarray, chosen) -> np.ndarray:
  return np.flatnonzero(np.isin(patients, list(chosen)))


def _from_patients(patients: np.ndarray, labels: np.ndarray, validation, test) -> Split:
  validation_idx, test_idx = _indices(patients, validation), _indices(patients, test)
  train_idx = np.setdiff1d(np.arange(len(patients)), np.concatenate([validation_idx, test_idx]))
  split = Split(train_idx, validation_idx, test_idx)
  for side, part in split.sides().items():
    if not labels[part].any():
      raise ConfigError(f'the {side} side of the patient split has no tumor slice; too few patients with tumors')
  return split


def _carve(ordered: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(chosen, rest): `count` patients drawn systematically from `ordered`, which keeps its order."""
  chosen = _systematic(len(ordered), count, rng)
  return ordered[chosen], np.delete(ordered, chosen)


def _tumor_first_draw(ordered: np.ndarray, patients: np.ndarray, labels: np.ndarray, count: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws `count` patients stratified over `ordered`, with at least one patient with tumor slices."""
  chosen, rest = _carve(ordered, count, rng)
  if not any(labels[patients == p].any() for p in chosen):  # only tiny sets with tumor-free patients
    with_tumor = [p for p in rest if labels[patients == p].any()]
    if with_tumor:
      swap = with_tumor[int(rng.integers(len(with_tumor)))]
      rest = np.array([chosen[0] if p == swap else p for p in rest])
      chosen = np.concatenate([[swap], chosen[1:]])
  return chosen, rest


def patient_split(patients: np.ndarray, labels: np.ndarray, held_out_fraction: float = HELD_OUT_FRACTION,
                  seed: int = 0) -> Split:
  """About 70/15/15 of the patients for train / validation / test, stratified by tumor-slice count."""
  patients, labels = np.asarray(patients), np.asarray(labels)
  ordered = _ordered_patients(patients, labels, seed)
  if len(ordered) < 3:
    raise ConfigError(f'a train/validation/test patient split needs at least 3 patients, got {len(ordered)}')
  rng = np.random.default_rng([seed, 1])
  count = min(_held_out_count(len(ordered), held_out_fraction), (len(ordered) - 1) // 2)
  test, rest = _tumor_first_draw(ordered, patients, labels, count, rng)
  validation, _ = _tumor_first_draw(rest, patients, labels, count, rng)
  return _from_patients(patients, labels, validation, test)


def patient_folds(patients: np.ndarray, labels: np.ndarray, k: int = NUM_FOLDS, seed: int = 0) -> list[np.ndarray]:
  """K disjoint patient folds covering every patient once: each consecutive block of k patients in
  tumor-count order is dealt one to a fold, in seeded random order."""
  patients, labels = np.asarray(patients), np.asarray(labels)
  if k < 2:
    raise ConfigError(f'k-fold needs k >= 2, got {k}')
  ordered = _ordered_patients(patients, labels, seed)
  if len(ordered) < k:
    raise ConfigError(f'a {k}-fold split needs at least {k} patients, got {len(ordered)}')
  rng = np.random.default_rng([seed, 2])
  fold_of = np.concatenate([rng.permutation(k) for _ in range(-(-len(ordered) // k))])[:len(ordered)]
  return [ordered[fold_of == f] for f in range(k)]


def patient_kfold(patients: np.ndarray, labels: np.ndarray, fold: int, k: int = NUM_FOLDS,
                  held_out_fraction: float = HELD_OUT_FRACTION, seed: int = 0) -> Split:
  """Fold `fold` of a k-fold patient split is test; about `held_out_fraction` of all patients,
  drawn stratified from the other folds, is validation; the rest trains."""
  if not 0 <= fold < k:
    raise ConfigError(f'fold must be in [0, {k}), got {fold}')
  patients, labels = np.asarray(patients), np.asarray(labels)
  if len(np.unique(patients)) < k + 2:
    raise ConfigError(f'a {k}-fold split with validation needs at least {k + 2} patients, got '
                      f'{len(np.unique(patients))}')
  folds = patient_folds(patients, labels, k, seed)
  test = folds[fold]
  remaining = _ordered_patients(patients[~np.isin(patients, test)], labels[~np.isin(patients, test)], seed)
  count = min(_held_out_count(len(np.unique(patients)), held_out_fraction), len(remaining) - 1)
  validation, _ = _tumor_first_draw(remaining, patients, labels, count, np.random.default_rng([seed, 3, fold]))
  return _from_patients(patients, labels, validation, test)


def patient_member(patients: np.ndarray, labels: np.ndarray, member: int, k: int = NUM_FOLDS, seed: int = 0) -> Split:
  """Member `member` of a k-member ensemble on the seed's patient split (`patient_split`): the seed's
  training patients are dealt into k folds as `patient_folds` deals all patients; the member trains
  on the other folds and selects its checkpoint on fold `member`. Its test side is the seed's
  validation patients, the ensemble's decision set: scored once at the member's end, never used by
  it for a choice. The seed's test patients are on no side."""
  if not 0 <= member < k:
    raise ConfigError(f'member must be in [0, {k}), got {member}')
  patients, labels = np.asarray(patients), np.asarray(labels)
  seeds = patient_split(patients, labels, seed=seed)
  held_out = patient_folds(patients[seeds.train], labels[seeds.train], k, seed)[member]
  in_fold = np.isin(patients[seeds.train], held_out)
  return Split(seeds.train[~in_fold], seeds.train[in_fold], seeds.validation)


def make_split(kind: str, patients: np.ndarray, labels: np.ndarray, *, fold: int | None = None,
               member: int | None = None, num_folds: int = NUM_FOLDS, seed: int = 0) -> Split:
  """Dispatches on `kind` ('patient' or 'slice'); `fold` selects fold K of a k-fold patient split as
  test; `member` selects member K of an ensemble on the seed's split (`patient_member`)."""
  if kind not in SPLIT_KINDS:
    raise ConfigError(f'unknown split {kind!r}; choose one of {SPLIT_KINDS}')
  if kind == 'slice':
    if fold is not None or member is not None:
      raise ConfigError('--fold and --member need the patient split')
    return slice_split(len(labels), seed=seed)
  if fold is not None and member is not None:
    raise ConfigError('--fold and --member exclude each other: an ensemble\'s members share the seed\'s split')
  if member is not None:
    return patient_member(patients, labels, member, num_folds, seed=seed)
  if fold is None:
    return patient_split(patients, labels, seed=seed)
  return patient_kfold(patients, labels, fold, num_folds, seed=seed)


def check_disjoint(split: Split, patients: np.ndarray) -> None:
  """Raises if a patient appears on two sides of a patient split (a leak that would inflate test numbers)."""
  seen: dict[str, str] = {}
  for side, part in split.sides().items():
    for patient in np.unique(np.asarray(patients)[part]):
      if patient in seen:
        raise ValueError(f'patient {patient} is on both the {seen[patient]} and the {side} side of the split')
      seen[patient] = side


def split_record(split: Split, kind: str, seed: int, fold: int | None, data_fingerprint: str,
                 patients: np.ndarray, slices: np.ndarray, member: int | None = None,
                 seed_test: np.ndarray | None = None) -> dict:
  """What `split.json` holds: each side a sorted list of patient IDs (`TCGA_CS_4941`), or for a
  slice split of `<patient>_<slice number>` strings; for an ensemble member, `member` and the
  seed's test patients it is never given (`seed_test`, indices), named so that its ensemble knows
  which patients its own test figures belong to."""
  def names(part):
    if kind == 'patient':
      return sorted(set(np.asarray(patients)[part].tolist()))
    return sorted(f'{patients[i]}_{int(slices[i])}' for i in part)

  record = {'kind': kind, 'seed': seed, 'fold': fold, 'data_fingerprint': data_fingerprint}
  record.update({side: names(part) for side, part in split.sides().items()})
  if member is not None:
    record['member'] = member
    record['seed_test'] = names(seed_test)
    record['note'] = (f'ensemble member {member}: its test side is the seed\'s validation patients (the ensemble\'s '
                      'decision set); the seed\'s test patients are on no side')
  if kind == 'slice':
    record['note'] = 'slice split: slices of one patient are on several sides, so patients leak into test'
  return record
