"""What `jaxbrain predict` scores, read and grouped by patient: slice images (files, patient folders,
trees), NIfTI cases (folders holding NIfTI volumes), DICOM cases (folders holding DICOM files) and
a case given by its three files or series folders, all as one stack of uint8 slices with a row per
slice (path, patient, slice), checked before anything is scored."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxbrain.data import dicom, kaggle3m, nifti
from jaxbrain.data.arrays import patient_stacks
from jaxbrain.data.kaggle3m import slice_identity
from jaxbrain.folders import PredictionDir


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
  """Image files named or found (recursively) under folders, without `_mask` files, sorted."""
  found = []
  for path in map(Path, paths):
    if nifti.NIFTI_SUFFIX.search(path.name):
      raise kaggle3m.DataError(f'{path}: a NIfTI volume alone cannot be scored; give its case folder (t1, flair '
                               'and t1ce volumes) or --t1 --flair --t1ce')
    if dicom.is_dicom_file(path):
      raise kaggle3m.DataError(f'{path}: a DICOM file alone cannot be scored; give its study folder, or its series\' '
                               'folders with --t1 --flair --t1ce')
    if path.is_dir():
      found += [p for p in path.rglob('*') if p.suffix.lower() in kaggle3m.IMAGE_EXTENSIONS and p.is_file()]
    elif path.is_file():
      found.append(path)
    else:
      raise kaggle3m.DataError(f'{path}: no such file or folder')
  images = sorted({p for p in found if not p.stem.endswith('_mask')},
                  key=lambda p: (str(p.parent), slice_identity(p)[1] or 0, p.name))  # slices in numeric order
  if not images:
    raise kaggle3m.DataError(f'no slice images (.tif/.png, not _mask) in {", ".join(map(str, paths))}')
  return images


def missing_slices(rows: Sequence[dict]) -> dict[str, list[int]]:
  """Per patient, the slice numbers between its first and last given slice that are not given
  (slices without a number are not counted)."""
  numbers: dict[str, set[int]] = {}
  for row in rows:
    if row['slice'] is not None:
      numbers.setdefault(row['patient'], set()).add(int(row['slice']))
  return {patient: missing for patient, given in numbers.items()
          if (missing := sorted(set(range(min(given), max(given) + 1)) - given))}


@dataclasses.dataclass
class Slices:
  """What is scored: uint8 slices [N, 256, 256, 3], a row per slice (path, patient, slice), output
  file stems, and the volume cases (NIfTI, DICOM) with the rows they span."""
  images: np.ndarray
  rows: list[dict]
  names: list[str]
  cases: list[tuple[nifti.Case, range]]


def read_given_case(case_files: dict, case_name: str | None) -> nifti.Case:
  """The case given by --t1 --flair --t1ce: three NIfTI files or three DICOM series folders."""
  folders = [Path(f).is_dir() for f in case_files.values()]
  if all(folders):
    return dicom.read_folders({m: Path(f) for m, f in case_files.items()}, case_name)
  if any(folders):
    raise kaggle3m.DataError(f'--t1 --flair --t1ce: {", ".join(map(str, case_files.values()))} mix folders and files; '
                             'give three NIfTI files or three DICOM series folders')
  return nifti.read_case({m: Path(f) for m, f in case_files.items()}, case_name)


def read_inputs(inputs: Sequence[str | Path], case_files: dict | None = None, case_name: str | None = None,
                progress: bool = False) -> Slices:
  """Every input read and checked: slice images (files, patient folders, trees), NIfTI cases
  (folders holding NIfTI volumes), DICOM cases (folders holding DICOM files), and the case of
  `case_files` {'t1', 'flair', 't1ce'} if given."""
  nifti_folders = [Path(p) for p in inputs if nifti.is_case_folder(Path(p))]
  dicom_folders = [Path(p) for p in inputs if Path(p) not in nifti_folders and dicom.is_dicom_folder(Path(p))]
  cases = ([nifti.read_case(nifti.find_case(folder)) for folder in nifti_folders]
           + [dicom.read_folder(folder) for folder in dicom_folders])
  if case_files:
    cases.append(read_given_case(case_files, case_name))
  image_inputs = [p for p in inputs if Path(p) not in nifti_folders + dicom_folders]
  paths = collect_inputs(image_inputs) if image_inputs else []
  images = kaggle3m.map_slices(kaggle3m.read_image, paths, progress='reading' if progress else None) if paths else []
  rows = [dict(zip(('patient', 'slice'), slice_identity(path)), path=str(path)) for path in paths]
  names = PredictionDir.output_names(paths)
  spans = []
  for case in cases:
    spans.append((case, range(len(rows), len(rows) + len(case.slices))))
    rows += [{'path': path, 'patient': case.name, 'slice': k + 1} for k, path in enumerate(case.slice_paths)]
    names += [f'{case.name}_{k + 1}' for k in range(len(case.slices))]
  if not rows:
    raise kaggle3m.DataError('nothing to score: give slice images, patient folders or NIfTI cases')
  stacked = np.concatenate(([np.stack(images)] if images else []) + [c.slices for c in cases])
  return Slices(stacked, [{k: r[k] for k in ('path', 'patient', 'slice')} for r in rows], names, spans)


def whole_stacks(patients: Sequence, size: int) -> list[slice]:
  """Consecutive chunks of about `size` slices that never split a patient's stack."""
  chunks = []
  for stack in patient_stacks(np.asarray(patients)):
    if chunks and chunks[-1].stop - chunks[-1].start < size:
      chunks[-1] = slice(chunks[-1].start, stack.stop)
    else:
      chunks.append(stack)
  return chunks
