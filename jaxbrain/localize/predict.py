"""Prediction on scans with trained runs: tumor probability per slice, tumor masks, overlays.

`predict(inputs, run_dir, seg_run_dir, out_dir)` backs `jaxbrain predict`. Inputs are image
files or folders (.tif/.png; a kaggle_3m patient folder or a whole tree; `_mask` files are
ignored), NIfTI cases (a folder of three BraTS-named volumes, or the three files given as a
`nifti.find_case`-like dict) and DICOM cases (a study folder whose series are matched by their
descriptions, or three series folders given as that dict). Every input is decoded, checked and
scored before anything is written.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from jaxbrain.flags import INFERENCE
from jaxbrain import __version__
from jaxbrain.data import dicom, dicom_seg, kaggle3m, nifti
from jaxbrain.data.kaggle3m import slice_identity
from jaxbrain.errors import Caution, OutputError, OutputExistsError, warnings_kept
from jaxbrain.inference import Scorer
from jaxbrain.overlay import captioned, heatmap_overlay, mask_overlay
from jaxbrain.files import write_csv, write_json
from jaxbrain.folders import PredictionDir
from jaxbrain.pages import write_prediction_page
from jaxbrain.postprocess import patient_stacks
from jaxbrain.runs import LoadedRun, RunError, read_gate


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


def check_output_dir(out_dir: Path, inputs: Sequence[str | Path], overwrite: bool) -> None:
  """Refuses an output folder inside (or holding) the inputs, a file, or a non-empty folder that is
  not an earlier `predict` output (replaced only with `overwrite`)."""
  out = out_dir.resolve()
  for given in map(lambda p: Path(p).resolve(), inputs):
    folder = given if given.is_dir() else given.parent
    if out == folder or folder in out.parents or out in folder.parents:
      raise OutputError(f'{out_dir}: lies inside or holds the inputs ({given}); choose an output folder outside them '
                     '(a later predict would score its overlays as scans)')
  if out_dir.exists() and not out_dir.is_dir():
    raise OutputExistsError(f'{out_dir}: is a file, not a folder; choose another --out')
  nearest = next(p for p in (out, *out.parents) if p.exists())
  if not nearest.is_dir() or not os.access(nearest, os.W_OK):
    raise OutputError(f'{out_dir}: cannot be written ({nearest} is {"not writable" if nearest.is_dir() else "a file"})')
  if out_dir.is_dir() and any(out_dir.iterdir()):
    if not overwrite:
      raise OutputExistsError(f'{out_dir}: is not empty; choose a new folder, or pass --overwrite to replace an '
                              'earlier predict output')
    if not PredictionDir(out_dir).marker.is_file():
      raise OutputExistsError(f'{out_dir}: was not written by jaxbrain predict (no {PredictionDir.MARKER}); --overwrite '
                              'only replaces predict outputs')


def _fresh_output_dir(out: PredictionDir) -> None:
  """An empty output folder holding the marker (an earlier predict output there is replaced)."""
  if out.path.is_dir() and any(out.path.iterdir()):
    shutil.rmtree(out.path)
  out.path.mkdir(parents=True, exist_ok=True)
  out.marker.write_text('written by jaxbrain predict\n')


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


def predict(inputs: Sequence[str | Path], run_dir: str | Path | None, out_dir: str | Path,
            seg_run_dir: str | Path | None = None,
            batch_size: int = INFERENCE.batch_size, progress: bool = True, overwrite: bool = False, case_files: dict | None = None,
            case_name: str | None = None) -> dict:
  """Scores every input slice; writes predictions.csv, summary.json, report.html, masks/ and overlays/
  under out_dir, and `<case>_mask.nii.gz` per volume case (and `<case>_seg.dcm`, a DICOM SEG, per
  DICOM case) when a segmenter is given.

  Every input is read and scored before anything is written; a non-finite probability (damaged
  weights) stops it with an error instead of becoming a label. The warnings printed on the way
  (a phantom-trained run, slice gaps, no gate) are repeated on the page.
  """
  with warnings_kept() as notes:  # the page repeats what the console said
    scorer = Scorer(run_dir, seg_run_dir, batch_size)
    given = list(inputs) + [f for f in (case_files or {}).values()]
    out_dir = Path(out_dir)
    check_output_dir(out_dir, given, overwrite)
    for run in scorer.runs:
      if run.phantom_only:
        warnings.warn(f'{run.directory}: was trained on synthetic phantom data only: it has never seen a real scan, and '
                      'its labels mean nothing for real patients', Caution, stacklevel=2)
    if scorer.classifier and scorer.segmenter and read_gate(scorer.segmenter, scorer.classifier) is None:
      warnings.warn(f'no gate was chosen on validation for these two runs: masks are kept only where the classifier '
                    f'says tumor (p >= {scorer.gate:g}); `jaxbrain gate --run {scorer.classifier.directory} --seg-run '
                    f'{scorer.segmenter.directory} --data-dir DIR` chooses one (often: no gate)', Caution, stacklevel=2)
    read = read_inputs(inputs, case_files, case_name, progress)
    if read.cases and scorer.segmenter is None:
      warnings.warn(f'{", ".join(case.name for case, _ in read.cases)}: volume case(s) scored without a segmenter '
                    '(--seg-run): each slice is labelled, but no mask (<case>_mask.nii.gz) is written', Caution,
                    stacklevel=2)
    if scorer.segmenter and (scorer.segmenter.config.task.context_slices or scorer.segmenter.config.task.scale_volumes):
      for patient, missing in missing_slices(read.rows).items():
        warnings.warn(f'{patient}: slices {", ".join(map(str, missing))} are not among the inputs; the segmenter '
                      f'{scorer.segmenter.directory} reads each slice with the rest of its patient (its neighbours, '
                      'its intensity scale), so it sees other inputs than in training: give whole patient folders',
                      Caution, stacklevel=2)
    images = read.images
    chunks = _whole_stacks([row['patient'] for row in read.rows], 16 * batch_size)
    if progress:
      from tqdm import tqdm
      chunks = tqdm(chunks, desc='predicting', unit='chunk')
    maps = bool(read.cases) and scorer.segmenter is not None  # volumes of pixel probabilities for NIfTI cases
    scored = [scorer.score(images[chunk], [row['patient'] for row in read.rows[chunk]], maps=maps) for chunk in chunks]
    probabilities = np.concatenate([s.probability for s in scored])
    labels = np.concatenate([s.label for s in scored])
    heatmaps = np.concatenate([s.heatmap for s in scored]) if scorer.segmenter is None else None
    extra = {column: np.concatenate([getattr(s, field) for s in scored])
             for column, field in EXTRA_COLUMNS.items() if getattr(scored[0], field) is not None}
    masks = np.concatenate([s.mask for s in scored]) if scorer.segmenter else None
    bad = np.flatnonzero(~np.isfinite(probabilities))
    if len(bad):
      first = read.rows[bad[0]]
      raise RunError(f'{(scorer.classifier or scorer.segmenter).directory}: gave a non-finite tumor probability for {len(bad)} slices (first {first["path"]}, '
                     f'slice {first["slice"]}); its weights are damaged or diverged, so no label is written')

    out = PredictionDir(out_dir)
    _fresh_output_dir(out)
    out.overlays.mkdir()
    if masks is not None:
      out.masks.mkdir()
    rows, summary, viewer = [], {}, {}
    for i, (identity, name) in enumerate(zip(read.rows, read.names)):
      patient, number = identity['patient'], identity['slice']
      label = int(labels[i])
      row = {**identity, 'probability': float(probabilities[i]), 'label': label,
             **{column: _cell(values[i]) for column, values in extra.items()}}
      key = number if number is not None else Path(identity['path']).name
      entry = summary.setdefault(patient, {'slices': 0, 'slices_with_tumor': []})
      entry['slices'] += 1
      if label:
        entry['slices_with_tumor'].append(key)
      if 'disagreement' in extra:
        entry['max_disagreement'] = max(entry.get('max_disagreement', 0.0), row['disagreement'])
        if row['members_disagree']:
          entry.setdefault('slices_where_members_disagree', []).append(key)
      if masks is not None:
        pixels = int(masks[i].sum())
        row['tumor_pixels'] = pixels
        entry.setdefault('tumor_area_pixels', {})[str(key)] = pixels
        entry['volume_voxels'] = entry.get('volume_voxels', 0) + pixels
        Image.fromarray(masks[i].astype(np.uint8) * 255).save(out.mask(name))
        overlay = captioned(mask_overlay(images[i], masks[i]), _caption(row), 'mask')
      else:
        overlay = captioned(heatmap_overlay(images[i], heatmaps[i]), _caption(row), 'heatmap')
      Image.fromarray(overlay).save(out.overlay(name))
      rows.append(row)
      viewer.setdefault(patient, []).append({
          'slice': key, 'image': out.overlay_link(name),
          **{k: row[k] for k in ('probability', 'label', 'tumor_pixels') if k in row}})
    pixel_maps = {field: np.concatenate([getattr(s, field) for s in scored]) for field in ('pixel_probability', 'pixel_spread')
                  if maps and getattr(scored[0], field) is not None}
    for case, span in read.cases:
      entry = summary[case.name]
      entry['inputs'] = {m: str(f) for m, f in case.files.items()}
      if masks is not None:
        mask_file = out.case_mask(case.name)
        volume = nifti.write_volume(case, masks[span.start:span.stop], mask_file)
        voxels = int(volume.sum())
        entry.update({'mask': mask_file.name, 'volume_voxels': voxels, 'tumor_volume_ml': voxels * case.voxel_ml})
        if case.flair_series is not None:
          entry.update(_write_seg(case, volume, out, str(scorer.segmenter.directory)))
        for field, path, key in (('pixel_probability', out.case_probability(case.name), 'probability_map'),
                                 ('pixel_spread', out.case_disagreement(case.name), 'disagreement_map')):
          if field in pixel_maps:
            nifti.write_volume(case, pixel_maps[field][span], path)
            entry[key] = path.name
    write_csv(out.predictions, rows)
    write_json(out.summary, summary)
    runs = [_run_facts(role, run) for role, run in (('classifier', scorer.classifier), ('segmenter', scorer.segmenter))
            if run is not None]
    write_prediction_page(out_dir, viewer, summary, runs, scorer.label_threshold, scorer.description, notes)
  return summary


def _write_seg(case: nifti.Case, volume: np.ndarray, out: PredictionDir, algorithm: str) -> dict:
  """The case's mask as a DICOM SEG ({'dicom_seg': its file name}); a SEG its series' headers cannot
  make (highdicom refuses a series without a Frame of Reference UID, say) is skipped with a warning
  saying why ({'dicom_seg_skipped': why}): the other outputs hold the same answer."""
  path = out.case_seg(case.name)
  try:
    dicom_seg.write_seg(case.flair_series, volume, path, __version__, algorithm)
  except Exception as e:  # noqa: BLE001 -- highdicom raises many kinds on headers it cannot use
    path.unlink(missing_ok=True)
    why = f'{type(e).__name__}: {e}'
    warnings.warn(f'{case.name}: no DICOM SEG written ({why}); the mask is in {out.case_mask(case.name).name} and '
                  'the other outputs', Caution, stacklevel=2)
    return {'dicom_seg_skipped': why}
  return {'dicom_seg': path.name}


def _whole_stacks(patients: list, size: int) -> list[slice]:
  """Consecutive chunks of about `size` slices that never split a patient's stack."""
  chunks = []
  for stack in patient_stacks(np.asarray(patients)):
    if chunks and chunks[-1].stop - chunks[-1].start < size:
      chunks[-1] = slice(chunks[-1].start, stack.stop)
    else:
      chunks.append(stack)
  return chunks


# Columns beside probability and label, where they apply (`inference.Scores` fields): with an
# ensemble, its members' standard deviation of the probability, the share of the union of their
# masks on which they disagree (segmenters) and whether their own labels differ; with a classifier
# and a segmenter, each one's own slice probability.
EXTRA_COLUMNS = {'disagreement': 'spread', 'mask_disagreement': 'mask_disagreement',
                 'members_disagree': 'label_disputed', 'classifier_probability': 'classifier_probability',
                 'segmenter_probability': 'segmenter_probability'}


def _cell(value) -> float | int:
  return int(value) if isinstance(value, (bool, np.bool_)) else float(value)


def _caption(row: dict) -> str:
  disputed = ' (members disagree)' if row.get('members_disagree') else ''
  return f'p(tumor) {row["probability"]:.3f}: {"tumor" if row["label"] else "no tumor"}{disputed}'


def _run_facts(role: str, run: LoadedRun) -> dict:
  return {'role': role, 'run': str(run.directory), 'experiment': run.config.experiment,
          'checkpoint': run.checkpoint.relative_to(run.directory).as_posix(), 'phantom_only': run.phantom_only}
