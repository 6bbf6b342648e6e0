"""Everything `jaxbrain predict` writes, by one writer: `PredictionWriter(PredictionDir, scorer)`
turns the slices read and their scores into the output folder's files, one method per kind of
output (slice files, the table, the summary, the volume cases' NIfTI and DICOM SEG files, the
page). A new output format is one more method; what `evaluate` reads stays named in
`folders.PredictionDir`."""
from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from jaxbrain import __version__, tumour_type
from jaxbrain.bundle import facts, headline
from jaxbrain.data import dicom_seg, nifti
from jaxbrain.data.inputs import Slices
from jaxbrain.errors import Caution
from jaxbrain.files import write_csv, write_json
from jaxbrain.folders import PredictionDir
from jaxbrain.inference import Scorer
from jaxbrain.intensity import intensity_features
from jaxbrain.overlay import captioned, heatmap_overlay, mask_overlay
from jaxbrain.pages import write_prediction_page
from jaxbrain.runs import LoadedRun
from jaxbrain.shape import shape_features

# Columns beside probability and label, where they apply (`inference.Scores` fields): with an
# ensemble, its members' standard deviation of the probability, the share of the union of their
# masks on which they disagree (segmenters) and whether their own labels differ; with a classifier
# and a segmenter, each one's own slice probability.
EXTRA_COLUMNS = {'disagreement': 'spread', 'mask_disagreement': 'mask_disagreement',
                 'members_disagree': 'label_disputed', 'classifier_probability': 'classifier_probability',
                 'segmenter_probability': 'segmenter_probability'}


@dataclasses.dataclass
class Scored:
  """Every input slice's scores, in the inputs' order: probability and label [N], the extra columns
  that apply, the masks [N, 256, 256] (with a segmenter) or the Grad-CAM heatmaps (without), and
  the pixel maps of the volume cases (`pixel_probability`, `pixel_spread`) where written."""
  probability: np.ndarray
  label: np.ndarray
  extra: dict
  mask: np.ndarray | None
  heatmap: np.ndarray | None
  pixel_maps: dict


class PredictionWriter:
  """Writes a prediction folder from the slices read and their scores (`write`)."""

  def __init__(self, out: PredictionDir, scorer: Scorer, type_model: dict | None = None):
    self.out, self.scorer, self.type_model = out, scorer, type_model

  def write(self, read: Slices, scored: Scored, notes: list[str]) -> dict:
    """Every output, the summary (returned) last but the page: a fresh folder holding the slice
    files, predictions.csv, the volume cases' files, summary.json and report.html."""
    self._fresh_folder(scored.mask is not None)
    rows, summary, viewer = self.slices(read, scored)
    self.cases(read, scored, summary)
    if scored.mask is not None:
      self.shapes(read, scored.mask, summary)
    models = [facts(run) for run in self.scorer.runs if run.bundle is not None]
    for entry in summary.values() if models else ():
      entry['model'] = models[0]
    write_csv(self.out.predictions, rows)
    write_json(self.out.summary, summary)
    runs = [_run_facts(role, run) for role, run in (('classifier', self.scorer.classifier),
                                                    ('segmenter', self.scorer.segmenter)) if run is not None]
    write_prediction_page(self.out.path, viewer, summary, runs, self.scorer.label_threshold, self.scorer.description,
                          notes)
    return summary

  def _fresh_folder(self, masks: bool) -> None:
    """An empty output folder holding the marker (an earlier predict output there is replaced)."""
    if self.out.path.is_dir() and any(self.out.path.iterdir()):
      shutil.rmtree(self.out.path)
    self.out.path.mkdir(parents=True, exist_ok=True)
    self.out.marker.write_text('written by jaxbrain predict\n')
    self.out.overlays.mkdir()
    if masks:
      self.out.masks.mkdir()

  def slices(self, read: Slices, scored: Scored) -> tuple[list[dict], dict, dict]:
    """Each slice's mask and overlay files; (its rows of predictions.csv, the summary per patient,
    the page's viewer entries per patient)."""
    rows, summary, viewer = [], {}, {}
    for i, (identity, name) in enumerate(zip(read.rows, read.names)):
      row = {**identity, 'probability': float(scored.probability[i]), 'label': int(scored.label[i]),
             **{column: _cell(values[i]) for column, values in scored.extra.items()}}
      key = identity['slice'] if identity['slice'] is not None else Path(identity['path']).name
      entry = summary.setdefault(identity['patient'], {'slices': 0, 'slices_with_tumor': []})
      _count(entry, row, key)
      if scored.mask is not None:
        pixels = int(scored.mask[i].sum())
        row['tumor_pixels'] = pixels
        entry.setdefault('tumor_area_pixels', {})[str(key)] = pixels
        entry['volume_voxels'] = entry.get('volume_voxels', 0) + pixels
        Image.fromarray(scored.mask[i].astype(np.uint8) * 255).save(self.out.mask(name))
        overlay = captioned(mask_overlay(read.images[i], scored.mask[i]), _caption(row), 'mask')
      else:
        overlay = captioned(heatmap_overlay(read.images[i], scored.heatmap[i]), _caption(row), 'heatmap')
      Image.fromarray(overlay).save(self.out.overlay(name))
      rows.append(row)
      viewer.setdefault(identity['patient'], []).append({
          'slice': key, 'image': self.out.overlay_link(name),
          **{k: row[k] for k in ('probability', 'label', 'tumor_pixels') if k in row}})
    return rows, summary, viewer

  def cases(self, read: Slices, scored: Scored, summary: dict) -> None:
    """Each volume case's files (with a segmenter: its mask volume, its DICOM SEG for a DICOM case,
    its pixel maps) and their entries in its summary."""
    for case, span in read.cases:
      entry = summary[case.name]
      entry['inputs'] = {m: str(f) for m, f in case.files.items()}
      if scored.mask is None:
        continue
      mask_file = self.out.case_mask(case.name)
      volume = nifti.write_volume(case, scored.mask[span.start:span.stop], mask_file)
      voxels = int(volume.sum())
      entry.update({'mask': mask_file.name, 'volume_voxels': voxels, 'tumor_volume_ml': voxels * case.voxel_ml})
      if case.flair_series is not None:
        entry.update(self.seg(case, volume))
      for field, path, key in (('pixel_probability', self.out.case_probability(case.name), 'probability_map'),
                               ('pixel_spread', self.out.case_disagreement(case.name), 'disagreement_map')):
        if field in scored.pixel_maps:
          nifti.write_volume(case, scored.pixel_maps[field][span], path)
          entry[key] = path.name

  def shapes(self, read: Slices, masks: np.ndarray, summary: dict) -> None:
    """Each patient's shape features (`shape.shape_features`: volume, angular standard deviation,
    margin fluctuation, bounding ellipsoid volume ratio, ...) from its predicted masks in slice order,
    as `shape` in its summary entry; a volume case's mL is its mask's in the case's own voxels. With
    a type model, the probabilities it gives from those features (and from the slices' intensity
    features where it was fitted on them), as `type_probabilities`."""
    order: dict[str, list] = {}
    for i, identity in enumerate(read.rows):
      order.setdefault(identity['patient'], []).append((identity['slice'] or 0, i))
    rows = {patient: [i for _, i in sorted(slices)] for patient, slices in order.items()}
    shapes = {patient: shape_features(masks[i]) for patient, i in rows.items()}
    for patient, found in shapes.items():
      summary[patient]['shape'] = {**found.as_dict(), 'volume_ml': summary[patient].get('tumor_volume_ml')}
    if self.type_model is not None:
      intensities = ({patient: intensity_features(read.images[i], masks[i]) for patient, i in rows.items()}
                     if tumour_type.needs_intensity(self.type_model) else None)
      for patient, probabilities in tumour_type.apply(self.type_model, shapes, intensities).items():
        summary[patient]['type_probabilities'] = {**probabilities, 'features': tumour_type.feature_set(self.type_model),
                                                  'masks_the_model_learned_from': self.type_model['masks'],
                                                  'note': tumour_type.RESEARCH_ONLY}

  def seg(self, case: nifti.Case, volume: np.ndarray) -> dict:
    """The case's mask as a DICOM SEG ({'dicom_seg': its file name}); a SEG its series' headers
    cannot make (highdicom refuses a series without a Frame of Reference UID, say) is skipped with a
    warning saying why ({'dicom_seg_skipped': why}): the other outputs hold the same answer."""
    path = self.out.case_seg(case.name)
    try:
      segmenter = self.scorer.segmenter
      said = facts(segmenter) if segmenter.bundle is not None else None
      made_by = f'{said["name"]} {said["version"]} (sha256 {said["sha256"]})' if said else str(segmenter.directory)
      dicom_seg.write_seg(case.flair_series, volume, path, __version__, made_by,
                          said['sha256'] if said else segmenter.directory.name)
    except Exception as e:  # noqa: BLE001 -- highdicom raises many kinds on headers it cannot use
      path.unlink(missing_ok=True)
      why = f'{type(e).__name__}: {e}'
      warnings.warn(f'{case.name}: no DICOM SEG written ({why}); the mask is in {self.out.case_mask(case.name).name} '
                    'and the other outputs', Caution, stacklevel=2)
      return {'dicom_seg_skipped': why}
    return {'dicom_seg': path.name}


def _count(entry: dict, row: dict, key) -> None:
  """A slice counted in its patient's summary entry: its label, the members' disagreement."""
  entry['slices'] += 1
  if row['label']:
    entry['slices_with_tumor'].append(key)
  if 'disagreement' in row:
    entry['max_disagreement'] = max(entry.get('max_disagreement', 0.0), row['disagreement'])
    if row['members_disagree']:
      entry.setdefault('slices_where_members_disagree', []).append(key)


def _cell(value) -> float | int:
  return int(value) if isinstance(value, (bool, np.bool_)) else float(value)


def _caption(row: dict) -> str:
  disputed = ' (members disagree)' if row.get('members_disagree') else ''
  return f'p(tumor) {row["probability"]:.3f}: {"tumor" if row["label"] else "no tumor"}{disputed}'


def _run_facts(role: str, run: LoadedRun) -> dict:
  return {'role': role, 'run': str(run.directory), 'experiment': run.config.experiment,
          'checkpoint': run.checkpoint.relative_to(run.directory).as_posix(), 'phantom_only': run.phantom_only,
          **({'model': headline(facts(run))} if run.bundle is not None else {})}
