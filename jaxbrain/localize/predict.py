"""Prediction on scans with trained runs: tumor probability per slice, tumor masks, overlays.

`predict(inputs, run_dir, seg_run_dir, out_dir)` backs `jaxbrain predict` in three steps: the
inputs read and grouped by patient (`data.inputs`: image files or folders, NIfTI cases, DICOM
cases), scored by `inference.Scorer`, and written by `localize.writer.PredictionWriter`. Every
input is read and scored before anything is written.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxbrain import tumour_type
from jaxbrain.bundle import facts, headline
from jaxbrain.data.inputs import Slices, missing_slices, read_inputs, whole_stacks
from jaxbrain.errors import Caution, OutputError, OutputExistsError, warnings_kept
from jaxbrain.flags import INFERENCE
from jaxbrain.folders import PredictionDir
from jaxbrain.inference import Scorer
from jaxbrain.localize.writer import EXTRA_COLUMNS, PredictionWriter, Scored
from jaxbrain.runs import RunError, read_gate


def predict(inputs: Sequence[str | Path], run_dir: str | Path | None, out_dir: str | Path,
            seg_run_dir: str | Path | None = None, batch_size: int = INFERENCE.batch_size, progress: bool = True,
            overwrite: bool = False, case_files: dict | None = None, case_name: str | None = None,
            type_model: str | Path | None = None) -> dict:
  """Scores every input slice; writes predictions.csv, summary.json, report.html, masks/ and overlays/
  under out_dir, and `<case>_mask.nii.gz` per volume case (and `<case>_seg.dcm`, a DICOM SEG, per
  DICOM case) when a segmenter is given; with `type_model` (`tumour_type.load`), each patient's
  type probabilities from the shape of its masks in summary.json.

  Every input is read and scored before anything is written; a non-finite probability (damaged
  weights) stops it with an error instead of becoming a label. The warnings printed on the way
  (a phantom-trained run, slice gaps, no gate) are repeated on the page.
  """
  with warnings_kept() as notes:  # the page repeats what the console said
    scorer = Scorer(run_dir, seg_run_dir, batch_size)
    types = tumour_type.load(type_model) if type_model is not None else None
    out_dir = Path(out_dir)
    check_output_dir(out_dir, [*inputs, *(case_files or {}).values()], overwrite)
    _warn_about_runs(scorer)
    read = read_inputs(inputs, case_files, case_name, progress)
    _warn_about_inputs(scorer, read)
    scored = score(scorer, read, batch_size, progress)
    return PredictionWriter(PredictionDir(out_dir), scorer, types).write(read, scored, notes)


def _warn_about_runs(scorer: Scorer) -> None:
  """A bundle's name, version, sha256, licence and intended use, first; warnings about the runs
  themselves: trained on phantoms only, a pair with no gate chosen."""
  for run in scorer.runs:
    if run.bundle is not None:
      print(headline(facts(run)), flush=True)
  for run in scorer.runs:
    if run.phantom_only:
      warnings.warn(f'{run.directory}: was trained on synthetic phantom data only: it has never seen a real scan, and '
                    'its labels mean nothing for real patients', Caution, stacklevel=3)
  if scorer.classifier and scorer.segmenter and read_gate(scorer.segmenter, scorer.classifier) is None:
    warnings.warn(f'no gate was chosen on validation for these two runs: masks are kept only where the classifier '
                  f'says tumor (p >= {scorer.gate:g}); `jaxbrain gate --run {scorer.classifier.directory} --seg-run '
                  f'{scorer.segmenter.directory} --data-dir DIR` chooses one (often: no gate)', Caution, stacklevel=3)


def _warn_about_inputs(scorer: Scorer, read: Slices) -> None:
  """Warnings about the inputs for these runs: volume cases without a segmenter (no mask comes),
  patients with slices missing for a segmenter that reads each slice with its neighbours."""
  if read.cases and scorer.segmenter is None:
    warnings.warn(f'{", ".join(case.name for case, _ in read.cases)}: volume case(s) scored without a segmenter '
                  '(--seg-run): each slice is labelled, but no mask (<case>_mask.nii.gz) is written', Caution,
                  stacklevel=3)
  if scorer.segmenter and (scorer.segmenter.config.task.context_slices or scorer.segmenter.config.task.scale_volumes):
    for patient, missing in missing_slices(read.rows).items():
      warnings.warn(f'{patient}: slices {", ".join(map(str, missing))} are not among the inputs; the segmenter '
                    f'{scorer.segmenter.directory} reads each slice with the rest of its patient (its neighbours, '
                    'its intensity scale), so it sees other inputs than in training: give whole patient folders',
                    Caution, stacklevel=3)


def score(scorer: Scorer, read: Slices, batch_size: int, progress: bool) -> Scored:
  """Every slice read, scored in chunks of whole patients; refuses a non-finite probability."""
  chunks = whole_stacks([row['patient'] for row in read.rows], 16 * batch_size)
  if progress:
    from tqdm import tqdm
    chunks = tqdm(chunks, desc='predicting', unit='chunk')
  maps = bool(read.cases) and scorer.segmenter is not None  # volumes of pixel probabilities for NIfTI cases
  parts = [scorer.score(read.images[chunk], [row['patient'] for row in read.rows[chunk]], maps=maps)
           for chunk in chunks]
  joined = lambda field: np.concatenate([getattr(part, field) for part in parts])  # noqa: E731
  probability = joined('probability')
  bad = np.flatnonzero(~np.isfinite(probability))
  if len(bad):
    first = read.rows[bad[0]]
    raise RunError(f'{(scorer.classifier or scorer.segmenter).directory}: gave a non-finite tumor probability for '
                   f'{len(bad)} slices (first {first["path"]}, slice {first["slice"]}); its weights are damaged or '
                   'diverged, so no label is written')
  segmenting = scorer.segmenter is not None
  return Scored(probability, joined('label'),
                {column: joined(field) for column, field in EXTRA_COLUMNS.items() if getattr(parts[0], field) is not None},
                joined('mask') if segmenting else None, None if segmenting else joined('heatmap'),
                {field: joined(field) for field in ('pixel_probability', 'pixel_spread')
                 if maps and getattr(parts[0], field) is not None})


def check_output_dir(out_dir: Path, inputs: Sequence[str | Path], overwrite: bool) -> None:
  """Refuses an output folder inside (or holding) the inputs, a file, or a non-empty folder that is
  not an earlier `predict` output (replaced only with `overwrite`). An input that does not exist
  is left to the reading, which names it."""
  out = out_dir.resolve()
  for given in (Path(p).resolve() for p in inputs if Path(p).exists()):
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
