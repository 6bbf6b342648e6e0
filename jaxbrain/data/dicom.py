"""DICOM MR series in: found in folders, matched to the LGG channels, read as volumes.

A study folder may hold many series; they are told apart by Series Instance UID and matched to
the three channels by their Series Description (`sequence_of`), or named one folder each. A
series is read as one volume in its scanner geometry: frames (single-frame files or the frames of
enhanced multi-frame files) ordered by their position along the slice normal, Rescale Slope and
Intercept applied, and the affine from Image Position / Orientation (Patient) and Pixel Spacing,
turned from DICOM's LPS into NIfTI's RAS. The result is an in-memory NIfTI image, so a DICOM case
then follows exactly the NIfTI case's path (`nifti.case_from_images`).

pydicom (and highdicom, for the SEG written back) are the optional extra `jaxbrain[dicom]`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from jaxbrain.data.kaggle3m import DataError

EXTRA = "pip install 'jaxbrain[dicom]'"
CHANNEL_NAMES = {'t1': 'pre-contrast T1', 'flair': 'FLAIR', 't1ce': 'post-contrast T1'}
MATCH_RULE = ('FLAIR: "flair" or "t2f" in the Series Description; post-contrast T1: a "t1" word with "post", '
              '"+c", "gd", "ce" or "contrast", or "t1c"/"t1ce"; pre-contrast T1: any other "t1" word')
CONTRAST_WORDS = {'post', 'gd', 'gad', 'ce', 'contrast', 'postcontrast'}
DICOMDIR_CLASS = '1.2.840.10008.1.3.10'  # Media Storage Directory Storage: an index, not an image
MR_DEVIATION = 1e-4  # direction cosines and pixel spacings (mm) that differ by more are different geometries


def pydicom_module():
  """pydicom, or a one-line error naming the extra when it is not installed."""
  try:
    import pydicom
  except ImportError:
    raise DataError(f'DICOM input needs the optional packages pydicom and highdicom: {EXTRA}') from None
  return pydicom


def is_dicom_file(path: Path) -> bool:
  """Whether `path` is a DICOM Part 10 file (the 'DICM' marker after its 128-byte preamble)."""
  try:
    with open(path, 'rb') as f:
      return f.read(132)[128:] == b'DICM'
  except OSError:
    return False


def _files(folder: Path) -> list[Path]:
  return sorted(p for p in folder.rglob('*') if p.is_file() and not p.name.startswith('.'))


def is_dicom_folder(folder: Path) -> bool:
  """Whether `folder` holds DICOM files (then it is read as DICOM series, never as slice images)."""
  return folder.is_dir() and any(is_dicom_file(p) for p in _files(folder))


@dataclasses.dataclass
class Series:
  """One series' files, told apart from others by Series Instance UID."""
  uid: str
  description: str
  modality: str
  files: list[Path]

  def describe(self) -> str:
    folders = sorted({str(p.parent) for p in self.files})
    return f'series "{self.description}" ({self.modality}, {len(self.files)} files in {", ".join(folders)})'


def find_series(folder: Path) -> list[Series]:
  """The series in `folder` (searched recursively; DICOMDIR indexes and hidden files skipped).
  Refuses a file that is not DICOM and one without a Series Instance UID, naming it."""
  pydicom = pydicom_module()
  found: dict[str, Series] = {}
  for path in _files(folder):
    try:
      header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 -- pydicom raises several kinds for files that are not DICOM
      raise DataError(f'{path}: not a DICOM file, in the DICOM folder {folder}; remove it, or name the series '
                      'folders with --t1 --flair --t1ce') from None
    if str(header.get('SOPClassUID', '')) == DICOMDIR_CLASS or path.name.upper() == 'DICOMDIR':
      continue
    uid = str(header.get('SeriesInstanceUID', '') or '')
    if not uid:
      raise DataError(f'{path}: has no Series Instance UID, so its series cannot be told apart from the others '
                      f'in {folder}')
    series = found.setdefault(uid, Series(uid, str(header.get('SeriesDescription', '') or ''),
                                          str(header.get('Modality', '') or ''), []))
    series.files.append(path)
  if not found:
    raise DataError(f'{folder}: holds no DICOM series')
  return list(found.values())


def sequence_of(description: str) -> str | None:
  """The LGG channel a Series Description names ('t1', 'flair', 't1ce'), or None (`MATCH_RULE`)."""
  text = description.lower()
  words = set(re.findall(r'[a-z0-9]+', text))
  if 'flair' in text or 't2f' in words:
    return 'flair'
  t1_words = {w for w in words if re.fullmatch(r't1w?[a-z]*', w)}
  if not t1_words:
    return None
  contrast = ('+c' in text or words & CONTRAST_WORDS or 'post' in text or 'contrast' in text
              or any(w in ('t1c', 't1ce', 't1gd', 't1post', 't1wce') for w in t1_words))
  return 't1ce' if contrast else 't1'


def _listing(series: list[Series]) -> str:
  return '; '.join(s.describe() for s in series)


def match_series(series: list[Series], where: Path) -> dict[str, Series]:
  """{'t1', 'flair', 't1ce'} -> the one series whose description names it; a one-line error listing
  the series found when a channel has none or several."""
  matched = {}
  for channel, name in CHANNEL_NAMES.items():
    candidates = [s for s in series if sequence_of(s.description) == channel]
    if len(candidates) != 1:
      count = 'no' if not candidates else f'{len(candidates)}'
      raise DataError(f'{where}: {count} {name} series by the default match ({MATCH_RULE}); series found: '
                      f'{_listing(series)}; name the three with --t1 --flair --t1ce')
    matched[channel] = candidates[0]
  return matched


def one_series(folder: Path) -> Series:
  """The series of a folder named for one channel; refuses a folder holding several."""
  series = find_series(folder)
  if len(series) > 1:
    raise DataError(f'{folder}: holds {len(series)} series ({_listing(series)}); give a folder per series')
  return series[0]


@dataclasses.dataclass
class Frame:
  """One image plane of a series: its file (and frame number in a multi-frame file), dataset,
  rescaled pixels [rows, columns] and geometry."""
  path: Path
  index: int | None
  dataset: object
  pixels: np.ndarray
  position: np.ndarray
  orientation: np.ndarray
  spacing: np.ndarray

  def __str__(self) -> str:
    return str(self.path) if self.index is None else f'{self.path} (frame {self.index + 1})'


@dataclasses.dataclass
class SeriesVolume:
  """A series read as a volume: `image` (nibabel, voxels [columns, rows, frames], RAS affine) and
  its frames in volume order (frame k is the volume's slice k)."""
  series: Series
  image: object
  frames: list[Frame]


def _attribute(name: str, sequence: str, per_frame, shared, dataset):
  """An attribute of a frame: in its per-frame functional group, the shared group, or the dataset."""
  for group in (per_frame, shared):
    if group is not None and sequence in group and name in group[sequence][0]:
      return group[sequence][0][name].value
  return dataset.get(name)


def _pixels(dataset, path: Path) -> np.ndarray:
  syntax = getattr(dataset, 'file_meta', {}).get('TransferSyntaxUID')
  try:
    return np.asarray(dataset.pixel_array)
  except Exception as e:  # noqa: BLE001 -- pydicom's decoders raise several kinds
    if syntax is not None and syntax.is_compressed:
      raise DataError(f'{path}: its pixel data, compressed as {syntax.name} ({syntax}), cannot be decoded by the '
                      'installed decoders (pylibjpeg with pylibjpeg-libjpeg or pylibjpeg-openjpeg adds the JPEG '
                      'family)') from None
    raise DataError(f'{path}: its pixel data cannot be decoded ({type(e).__name__}: {e})') from None


def _frames(path: Path) -> list[Frame]:
  """The frames of one file (one, or NumberOfFrames for an enhanced multi-frame image)."""
  dataset = pydicom_module().dcmread(path)
  if 'PixelData' not in dataset and 'FloatPixelData' not in dataset:
    raise DataError(f'{path}: a DICOM file without pixel data in an image series')
  count = int(dataset.get('NumberOfFrames', 1) or 1)
  pixels = _pixels(dataset, path).astype(np.float32)
  if count == 1 and pixels.ndim == 2:
    pixels = pixels[None]
  if pixels.ndim != 3 or pixels.shape[0] != count:
    raise DataError(f'{path}: pixel data of shape {pixels.shape} is not {count} grayscale frames')
  per_frame = dataset.get('PerFrameFunctionalGroupsSequence')
  shared = dataset.get('SharedFunctionalGroupsSequence')
  shared = shared[0] if shared else None
  frames = []
  for index in range(count):
    group = per_frame[index] if per_frame else None
    geometry = {name: _attribute(name, sequence, group, shared, dataset) for name, sequence in (
        ('ImagePositionPatient', 'PlanePositionSequence'), ('ImageOrientationPatient', 'PlaneOrientationSequence'),
        ('PixelSpacing', 'PixelMeasuresSequence'))}
    missing = [name for name, value in geometry.items() if value is None]
    if missing:
      raise DataError(f'{path}: has no {", ".join(missing)}, so its place in the patient is unknown')
    slope = _attribute('RescaleSlope', 'PixelValueTransformationSequence', group, shared, dataset)
    intercept = _attribute('RescaleIntercept', 'PixelValueTransformationSequence', group, shared, dataset)
    values = pixels[index] * float(1 if slope is None else slope) + float(0 if intercept is None else intercept)
    frames.append(Frame(path, index if count > 1 else None, dataset, values,
                        np.asarray(geometry['ImagePositionPatient'], float),
                        np.asarray(geometry['ImageOrientationPatient'], float),
                        np.asarray(geometry['PixelSpacing'], float)))
  return frames


def _check_one_geometry(frames: list[Frame], series: Series) -> None:
  first = frames[0]
  for frame in frames[1:]:
    if not np.allclose(frame.orientation, first.orientation, atol=MR_DEVIATION):
      raise DataError(f'{frame}: orientation {np.round(frame.orientation, 4).tolist()} differs from '
                      f'{np.round(first.orientation, 4).tolist()} of {first}: {series.describe()} is not one volume')
    if not np.allclose(frame.spacing, first.spacing, atol=MR_DEVIATION):
      raise DataError(f'{frame}: pixel spacing {frame.spacing.tolist()} mm differs from {first.spacing.tolist()} mm '
                      f'of {first}: {series.describe()} is not one volume')
    if frame.pixels.shape != first.pixels.shape:
      raise DataError(f'{frame}: {frame.pixels.shape[0]}x{frame.pixels.shape[1]} pixels where {first} has '
                      f'{first.pixels.shape[0]}x{first.pixels.shape[1]}: {series.describe()} is not one volume')


def _ordered(frames: list[Frame], series: Series, normal: np.ndarray) -> list[Frame]:
  """The frames by position along the slice normal; refuses a repeated position and a gap (a
  step between neighbours unlike the others)."""
  frames = sorted(frames, key=lambda f: float(f.position @ normal))
  along = np.array([f.position @ normal for f in frames])
  steps = np.diff(along)
  for k in np.flatnonzero(steps < 1e-3):
    raise DataError(f'{frames[k]} and {frames[k + 1]}: the same position along the slice normal '
                    f'({along[k]:.2f} mm): a repeated slice in {series.describe()}')
  if not len(steps):
    return frames
  step = float(np.median(steps))
  for k in np.flatnonzero(np.abs(steps - step) > max(0.01 * step, 0.01)):
    raise DataError(f'{frames[k]} -> {frames[k + 1]}: {steps[k]:.2f} mm between slices where {series.describe()} '
                    f'steps {step:.2f} mm: slices are missing (a gap) or unevenly spaced')
  return frames


def read_series(series: Series) -> SeriesVolume:
  """The series as one volume (module docstring). Refuses a non-MR series, files without pixel
  data, undecodable pixels, frames that disagree on orientation, spacing or size, repeated
  positions and gaps, each in one line naming the file."""
  import nibabel as nib

  if series.modality != 'MR':
    raise DataError(f'{series.describe()}: modality {series.modality or "not given"}, not MR: jaxbrain reads MR '
                    'series only')
  frames = [frame for path in sorted(series.files) for frame in _frames(path)]
  _check_one_geometry(frames, series)
  row, column = frames[0].orientation[:3], frames[0].orientation[3:]
  normal = np.cross(row, column)
  frames = _ordered(frames, series, normal)
  if len(frames) > 1:
    slice_vector = (frames[-1].position - frames[0].position) / (len(frames) - 1)
  else:
    slice_vector = normal * float(frames[0].dataset.get('SliceThickness') or 1.0)
  spacing = frames[0].spacing  # (between rows, between columns)
  lps = np.eye(4)
  lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing[1], column * spacing[0], slice_vector, frames[0].position
  voxels = np.stack([frame.pixels.T for frame in frames], -1)  # [columns, rows, frames]
  return SeriesVolume(series, nib.Nifti1Image(voxels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps), frames)


def series_folder(series: Series) -> Path:
  """The folder holding a series' files (their deepest common folder)."""
  return Path(os.path.commonpath([str(p.parent) for p in series.files]))


def read_case(series: dict[str, Series], name: str):
  """A `nifti.Case` from the three matched series {'t1', 'flair', 't1ce'}: each read as a volume,
  then the NIfTI case's path (same orientation handling, scaling, co-registration rule)."""
  from jaxbrain.data import nifti

  volumes = {channel: read_series(s) for channel, s in series.items()}
  return nifti.case_from_images({c: v.image for c, v in volumes.items()},
                                {c: series_folder(s) for c, s in series.items()}, name, flair_series=volumes['flair'])


def read_folder(folder: Path):
  """The case of a study folder: its series matched by description, named after the folder."""
  return read_case(match_series(find_series(folder), folder), folder.name)


def read_folders(folders: dict[str, Path], name: str | None = None):
  """The case of three series folders {'t1', 'flair', 't1ce'}, one series each; named `name` or
  after the folder holding the FLAIR folder."""
  flair = Path(folders['flair'])
  return read_case({c: one_series(Path(f)) for c, f in folders.items()}, name or flair.resolve().parent.name)
