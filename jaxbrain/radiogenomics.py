"""Shape features tested against the genomic subtypes, by Buda et al. 2019's protocol: each feature
dichotomized at its median over the patients tested, a Fisher exact test of the resulting table
against each subtype, a Bonferroni correction over the hypotheses tested; the masks are the true
ones or automatic ones, each patient's from a run that never trained on it (`out_of_fold_runs`).

The subtypes have up to six categories, so the table is k x 2; its exact test (Freeman and Halton's
extension of Fisher's) enumerates every table with the observed margins. scipy's `fisher_exact`
answers k x 2 tables by sampling, so the p-values here are computed exactly instead, and agree with
scipy's on 2 x 2 tables (tested). Patients without a tumour (no shape) or without the subtype
(an empty cell of `data.csv`) are left out of that test, and each test states its patient count.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxbrain.data import kaggle3m
from jaxbrain.data.clinical import ClinicalTable
from jaxbrain.errors import UserError
from jaxbrain.runs import read_split
from jaxbrain.shape import ShapeFeatures

SIGNIFICANCE = 0.05  # family-wise, before the Bonferroni division
RELATIVE_TIE = 1e-7  # tables as probable as the observed one within this count as extreme


def patient_masks(data_dir) -> dict[str, np.ndarray]:
  """Each patient's true mask volume uint8 [Z, 256, 256], slices in order, from a kaggle_3m folder."""
  return _patient_volumes(data_dir, lambda record: kaggle3m.read_mask(record.mask_path), 'reading masks')


def patient_images(data_dir) -> dict[str, np.ndarray]:
  """Each patient's slices uint8 [Z, 256, 256, 3], in the order of `patient_masks`."""
  return _patient_volumes(data_dir, lambda record: kaggle3m.read_image(record.image_path), 'reading images')


def _patient_volumes(data_dir, read, progress: str) -> dict[str, np.ndarray]:
  records = kaggle3m.scan(data_dir)
  volumes: dict[str, list] = {}
  for record, array in zip(records, kaggle3m.map_slices(read, records, progress=progress)):
    volumes.setdefault(record.patient, []).append(array)
  return {patient: np.stack(slices) for patient, slices in volumes.items()}


def exact_test(table: np.ndarray) -> float:
  """The exact p-value of independence for a k x 2 table of counts: the probability, given its
  margins, of every table no more probable than the observed one (the hypergeometric, summed)."""
  table = np.asarray(table, dtype=int)
  if table.ndim != 2 or table.shape[1] != 2 or np.any(table < 0):
    raise ValueError(f'a k x 2 table of counts is needed; got {table.tolist()}')
  rows, first = table.sum(axis=1), int(table[:, 0].sum())
  log_choose = [np.array([math.lgamma(r + 1) - math.lgamma(x + 1) - math.lgamma(r - x + 1) for x in range(r + 1)])
                for r in rows]
  totals, logs = np.zeros(1, int), np.zeros(1)
  for r, row_logs in zip(rows, log_choose):  # every first column with these row sums, pruned past its sum
    totals = (totals[:, None] + np.arange(r + 1)[None, :]).ravel()
    logs = (logs[:, None] + row_logs[None, :]).ravel()
    keep = totals <= first
    totals, logs = totals[keep], logs[keep]
  logs = logs[totals == first]
  observed = sum(row_logs[x] for row_logs, x in zip(log_choose, table[:, 0]))
  probability = np.exp(logs - np.logaddexp.reduce(logs))
  return float(min(1.0, probability[logs <= observed + RELATIVE_TIE].sum()))


def above_median(values: np.ndarray) -> np.ndarray:
  """1 where a value is above the median of the values given, 0 at or below it (none given: none)."""
  return (values > np.median(values)).astype(int) if values.size else np.zeros(0, int)


@dataclasses.dataclass(frozen=True)
class Association:
  """One hypothesis: `feature` (above vs at-or-below its median) against `subtype`'s categories.
  `table` [category, (at or below, above)] with `categories` its rows; `p` the exact p-value;
  `patients` how many were tested."""
  feature: str
  subtype: str
  categories: tuple[int, ...]
  table: tuple[tuple[int, int], ...]
  p: float
  patients: int


def associate(features: Mapping[str, ShapeFeatures], clinical: ClinicalTable, feature_names: Sequence[str],
              subtypes: Sequence[str]) -> list[Association]:
  """Every (feature, subtype) pair tested over the patients that have both; a feature's median is
  taken over the patients of that test. A pair no patient has both of is an empty table: p 1."""
  patients = sorted(features)
  found = []
  for subtype in subtypes:
    codes = clinical.column(subtype, patients)
    for name in feature_names:
      values = np.array([np.nan if (v := getattr(features[p], name)) is None else v for p in patients], float)
      use = ~np.isnan(values) & ~np.isnan(codes)
      split, groups = above_median(values[use]), codes[use].astype(int)
      categories = tuple(int(c) for c in np.unique(groups))
      table = tuple((int(np.sum((groups == c) & (split == 0))), int(np.sum((groups == c) & (split == 1))))
                    for c in categories)
      found.append(Association(name, subtype, categories, table, exact_test(np.array(table)), int(use.sum())))
  return found


def bonferroni(associations: Sequence[Association], level: float = SIGNIFICANCE) -> float:
  """The per-test threshold: `level` over the number of hypotheses."""
  return level / len(associations)


class RadiogenomicsError(UserError, ValueError):
  """Runs that cannot give every patient a mask from a model that never trained on it."""


def out_of_fold_runs(run_dirs: Sequence[str | Path], patients: Sequence[str]) -> dict[str, Path]:
  """Each patient -> the first run of `run_dirs` whose split.json does not have it among its
  training patients (a fold run's test side, an ensemble member's held-out fold, or patients no
  run trained on); a patient that every run trained on is refused, naming it."""
  trained = [(Path(run), set(read_split(Path(run))['train'])) for run in run_dirs]
  chosen = {}
  for patient in patients:
    run = next((run for run, train in trained if patient not in train), None)
    if run is None:
      raise RadiogenomicsError(f'{patient}: every run given trained on it ({", ".join(str(r) for r, _ in trained)}); '
                               'give runs that held it out (the five --fold K runs, or the five ensemble members)')
    chosen[patient] = run
  return chosen


def automatic_masks(run_dirs: Sequence[str | Path], data_dir: str | Path, out: Path) -> tuple[dict, dict]:
  """Every patient of `data_dir` segmented by a run that did not train on it (`out_of_fold_runs`),
  written by `jaxbrain predict` under `out/<run name>`: ({patient: mask volume [Z, 256, 256]},
  {patient: the run that made it})."""
  from jaxbrain.localize.evaluate import score_slices
  from jaxbrain.localize.predict import predict

  folders = {record.patient: record.image_path.parent for record in kaggle3m.scan(data_dir)}
  chosen = out_of_fold_runs(run_dirs, sorted(folders))
  outputs = []
  for run in dict.fromkeys(chosen.values()):
    output = out / run.name
    predict([folders[p] for p in sorted(chosen) if chosen[p] == run], None, output, seg_run_dir=run, overwrite=True)
    outputs.append(output)
  scored = score_slices(outputs, data_dir)
  return {patient: scored.masks[rows] for patient, rows in scored.volumes.items()}, chosen


def feature_agreement(true: Mapping[str, ShapeFeatures], automatic: Mapping[str, ShapeFeatures],
                      feature_names: Sequence[str]) -> list[dict]:
  """How automatic masks' features compare with the true masks', per feature over the patients
  that have it from both: medians, Pearson's correlation, and the share of patients on the same
  side of each set's own median (the split the association tests use)."""
  patients = sorted(set(true) & set(automatic))
  rows = []
  for name in feature_names:
    pairs = np.array([(getattr(true[p], name), getattr(automatic[p], name)) for p in patients
                      if getattr(true[p], name) is not None and getattr(automatic[p], name) is not None], float)
    if len(pairs) < 2:
      rows.append({'feature': name, 'patients': len(pairs)})
      continue
    same_side = np.mean(above_median(pairs[:, 0]) == above_median(pairs[:, 1]))
    rows.append({'feature': name, 'patients': len(pairs), 'median_true': float(np.median(pairs[:, 0])),
                 'median_automatic': float(np.median(pairs[:, 1])),
                 'correlation': float(np.corrcoef(pairs.T)[0, 1]), 'same_side_of_median': float(same_side)})
  return rows
