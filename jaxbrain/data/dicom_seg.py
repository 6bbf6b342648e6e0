"""DICOM SEG out: a tumor mask as a binary DICOM Segmentation of the FLAIR series it was computed on.

One segment, the tumor, coded as SNOMED CT 108369006 "Neoplasm" (category 49755003 "Morphologically
Abnormal Structure"): the LGG masks outline the FLAIR abnormality of a glioma. The frames lie in
the source series' own geometry (one per source frame, empty frames left out), so a viewer
overlays them on the scan. The standard makes a SEG carry its source's patient and study
identifiers: the object names the patient as the scan does (docs/predict.md says so).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxbrain.data.dicom import EXTRA, SeriesVolume
from jaxbrain.data.kaggle3m import DataError

NEOPLASM = ('108369006', 'SCT', 'Neoplasm')
LONG_STRING = 64  # the most characters of a DICOM Long String (LO) value, such as a device's serial number


def _highdicom():
  try:
    import highdicom
  except ImportError:
    raise DataError(f'a DICOM SEG needs the optional package highdicom: {EXTRA}') from None
  return highdicom


def source_frames(volume: SeriesVolume, mask: np.ndarray) -> tuple[list, np.ndarray]:
  """The SEG's source images and its frames [frames, rows, columns] in their order, from a mask
  volume in the series' voxel order [columns, rows, frames]: one frame per single-frame file, or
  the frames of one multi-frame file in that file's order."""
  planes = [np.asarray(mask[:, :, k]).T for k in range(mask.shape[2])]
  if all(frame.index is None for frame in volume.frames):
    return [frame.dataset for frame in volume.frames], np.stack(planes)
  sources = {id(frame.dataset) for frame in volume.frames}
  if len(sources) > 1:
    raise DataError(f'{volume.series.describe()}: spread over {len(sources)} multi-frame files; a DICOM SEG is '
                    'written for a series of single-frame files or of one multi-frame file')
  ordered = np.zeros((len(planes), *planes[0].shape), planes[0].dtype)
  for frame, plane in zip(volume.frames, planes):
    ordered[frame.index] = plane
  return [volume.frames[0].dataset], ordered


def write_seg(volume: SeriesVolume, mask: np.ndarray, path: Path, version: str, made_by: str, model_id: str) -> int:
  """Writes `mask` (bool or 0/1, the series' voxel order) as a binary DICOM SEG at `path` naming
  the algorithm (jaxbrain, its `version`, the model or run that `made_by` names, as the algorithm's
  parameter) and the model by `model_id` (a bundle's sha256, a run folder's name) as the device's
  serial number, cut to the 64 characters DICOM allows there; returns its tumor pixel count."""
  hd = _highdicom()
  from pydicom.sr.codedict import codes

  sources, frames = source_frames(volume, np.asarray(mask, bool))
  algorithm = hd.AlgorithmIdentificationSequence(name='jaxbrain', family=codes.cid7162.ArtificialIntelligence,
                                                 version=version, parameters={'model': made_by})
  segment = hd.seg.SegmentDescription(
      segment_number=1, segment_label='tumor', segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
      segmented_property_type=hd.sr.CodedConcept(*NEOPLASM), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
      algorithm_identification=algorithm)
  source = sources[0]
  seg = hd.seg.Segmentation(
      source_images=sources, pixel_array=frames.astype(np.uint8), segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
      segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=int(source.get('SeriesNumber') or 0) + 1000,
      sop_instance_uid=hd.UID(), instance_number=1, manufacturer='jaxbrain', manufacturer_model_name='jaxbrain',
      software_versions=version, device_serial_number=model_id[:LONG_STRING],
      series_description='jaxbrain tumor mask', content_description='tumor mask', content_label='TUMOR',
      omit_empty_frames=bool(frames.any()))
  seg.save_as(path)
  return int(frames.sum())
