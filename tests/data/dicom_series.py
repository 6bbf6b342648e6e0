"""DICOM MR series for the tests, written by SimpleITK's (GDCM's) series writer, which jaxbrain
does not contain: the reader is checked against a writer it shares no code with."""
from __future__ import annotations

import contextlib
import locale
from pathlib import Path

import numpy as np

DESCRIPTIONS = {'t1': 'AX T1 SE', 'flair': 'AX T2 FLAIR', 't1ce': 'AX T1 POST GD'}
PATIENT = {'0010|0010': 'Doe^Jane', '0010|0020': 'MRN-4242'}  # must never reach predict's outputs


@contextlib.contextmanager
def _locale_kept():
  """GDCM's writer sets the process's locale to "C" and leaves it so: text files read later in
  the same test process would decode as ASCII. Restored on exit."""
  previous = locale.setlocale(locale.LC_ALL)
  try:
    yield
  finally:
    locale.setlocale(locale.LC_ALL, previous)


def write_series(image, folder: Path, description: str, study: str, frame_of_reference: str,
                 modality: str = 'MR') -> list[Path]:
  """Writes a SimpleITK image (int16, its origin, spacing and direction) as a series of
  single-frame MR images, one file per slice along its third axis, named in shuffled order so
  that file names do not give the slice order."""
  import pydicom
  import SimpleITK as sitk

  folder.mkdir(parents=True, exist_ok=True)
  series = pydicom.uid.generate_uid()
  direction = image.GetDirection()
  orientation = '\\'.join(f'{v:.6f}' for v in direction[0:7:3] + direction[1:8:3])
  writer = sitk.ImageFileWriter()
  writer.KeepOriginalImageUIDOn()
  names = np.random.default_rng(len(description)).permutation(image.GetDepth())
  paths = []
  for k in range(image.GetDepth()):
    plane = image[:, :, k]
    tags = {'0008|0060': modality, '0020|000e': series, '0020|000d': study, '0020|0052': frame_of_reference,
            '0008|103e': description, '0020|0011': '3', '0020|0013': str(k + 1), '0020|0037': orientation,
            '0020|0032': '\\'.join(f'{v:.6f}' for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            '0018|0050': f'{image.GetSpacing()[2]:.6f}', '0008|0018': pydicom.uid.generate_uid(),
            '0008|0020': '20261204', '0008|0030': '120000', '0008|0021': '20261204', '0008|0031': '120000', **PATIENT}
    for tag, value in tags.items():
      plane.SetMetaData(tag, value)
    paths.append(folder / f'IM{names[k]:04d}.dcm')
    writer.SetFileName(str(paths[-1]))
    with _locale_kept():
      writer.Execute(plane)
  return paths


def nifti_case_as_dicom(files: dict, study_folder: Path) -> dict[str, Path]:
  """The three NIfTI volumes of a case as three series of one study (voxels rounded to int16),
  each in its own subfolder; returns channel -> series folder."""
  import pydicom
  import SimpleITK as sitk

  study, frame_of_reference = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
  folders = {}
  for channel, path in files.items():
    image = sitk.Cast(sitk.Round(sitk.ReadImage(str(path), sitk.sitkFloat32)), sitk.sitkInt16)
    folders[channel] = study_folder / channel
    write_series(image, folders[channel], DESCRIPTIONS[channel], study, frame_of_reference)
  return folders


def as_enhanced(study: Path, out: Path) -> Path:
  """Each channel's series of `study` as one enhanced multi-frame file (highdicom's legacy
  conversion: geometry in per-frame and shared functional groups), in `out/<channel>/`."""
  import highdicom as hd
  import pydicom

  for channel in DESCRIPTIONS:
    datasets = [pydicom.dcmread(p) for p in sorted((study / channel).iterdir())]
    (out / channel).mkdir(parents=True)
    hd.legacy.LegacyConvertedEnhancedMRImage(datasets, series_instance_uid=hd.UID(), series_number=9,
                                             sop_instance_uid=hd.UID(), instance_number=1).save_as(out / channel / 'mf.dcm')
  return out


def as_rle(study: Path, out: Path) -> Path:
  """Each file of `study` compressed by pydicom's RLE Lossless encoder, in `out/<channel>/`."""
  import pydicom

  for channel in DESCRIPTIONS:
    (out / channel).mkdir(parents=True)
    for path in (study / channel).iterdir():
      dataset = pydicom.dcmread(path)
      dataset.compress(pydicom.uid.RLELossless)
      dataset.save_as(out / channel / path.name)
  return out
