"""Volume cases: three co-registered volumes (T1, FLAIR, post-contrast T1) read as LGG-like slices,
and masks written back as a volume in the input's own frame. The volumes come from NIfTI files
(here) or DICOM series (`jaxbrain.data.dicom`, read into the same in-memory NIfTI images).

The LGG slices' channels are pre-contrast T1, FLAIR and post-contrast T1: BraTS's `t1`, `flair`,
`t1ce` (2021 names) or `t1n`, `t2f`, `t1c` (2023 names), as the end of a case's file names
(`<case>_t1.nii.gz`, `<case>-t1n.nii.gz`) or as the whole name (`t1n.nii.gz`, as BraTS toolkits
write a preprocessed case). A case is read in four steps:
1. reoriented to the closest canonical frame (RAS: the axial axis last, inferior to superior);
2. each axial slice turned for display as the LGG slices are (anterior at the top, the patient's
   right on the image's left, the radiological convention of their DICOM source);
3. each modality scaled per volume to 8 bits as the LGG slices are: voxels <= 0 stay 0 (background)
   and the 99th percentile of the positive voxels maps to `LGG_P99` (the median of that percentile
   over the 80 shared LGG patients, per channel), clipped at 255;
4. each slice resampled in-plane (bilinear) to 256x256.
`to_input_frame` undoes 4, 2 and 1 for a mask: the volume has the input's shape and affine.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
from PIL import Image

from jaxbrain.data.kaggle3m import DataError

MODALITIES = ('t1', 'flair', 't1ce')  # the LGG slices' channel order
NAMES = {'t1': ('_t1', '-t1n'), 'flair': ('_flair', '-t2f'), 't1ce': ('_t1ce', '-t1c')}  # BraTS 2021, 2023
LGG_P99 = np.array([137.0, 137.0, 126.0])  # per channel; see the module docstring
SIZE = 256
NIFTI_SUFFIX = re.compile(r'\.nii(\.gz)?$')


def _stem(path: Path) -> str | None:
  """The file name without .nii / .nii.gz; None for other files."""
  return NIFTI_SUFFIX.sub('', path.name) if NIFTI_SUFFIX.search(path.name) else None


def is_case_folder(folder: Path) -> bool:
  """Whether `folder` holds NIfTI files (then it is read as a case, never as slice images)."""
  return folder.is_dir() and any(_stem(p) for p in folder.iterdir())


def _named(stem: str, modality: str) -> bool:
  """Whether a NIfTI file's name (without .nii[.gz]) is `modality`'s by a BraTS name: ending in one
  of its suffixes, or one of them bare (suffixes match exactly: `_t1` is not `_t1ce`)."""
  return any(stem.endswith(suffix) or stem == suffix[1:] for suffix in NAMES[modality])


def find_case(folder: Path) -> dict[str, Path]:
  """The three modality files of a case folder, by their BraTS names (`_named`). One-line errors
  for a missing or doubled modality."""
  files = [p for p in sorted(folder.iterdir()) if _stem(p)]
  found = {}
  for modality, suffixes in NAMES.items():
    matches = [p for p in files if _named(_stem(p), modality)]
    if not matches:
      names = [s[1:] + '.nii.gz' for s in suffixes] + ['<case>' + s + '.nii.gz' for s in suffixes]
      raise DataError(f'{folder}: no {modality} volume (a NIfTI file named {", ".join(names)}); a case needs t1, '
                      'flair and t1ce')
    if len(matches) > 1:
      raise DataError(f'{folder}: several {modality} volumes ({", ".join(p.name for p in matches)}); keep one')
    found[modality] = matches[0]
  return found


def case_name(flair: Path) -> str:
  """A case named after its FLAIR file (BraTS-GLI-00000-000-t2f.nii.gz -> BraTS-GLI-00000-000), or
  after its folder when the file bears the sequence's name alone (case7/t2f.nii.gz -> case7)."""
  stem = _stem(flair) or flair.stem
  for suffix in NAMES['flair']:
    if stem == suffix[1:]:
      return flair.resolve().parent.name
    if stem.endswith(suffix):
      return stem[:-len(suffix)]
  return stem


@dataclasses.dataclass
class Case:
  """A case read for scoring: `slices` uint8 [Z, 256, 256, 3] (axial, inferior to superior) and what
  `to_input_frame` needs to put a mask back: the input's shape, affine, header and orientation.
  `files` names each channel's source (a NIfTI file or a DICOM series folder); `slice_paths` the
  file behind each slice (the FLAIR file; a DICOM FLAIR slice's own file where the series is axial);
  `flair_series` the DICOM FLAIR series (`dicom.SeriesVolume`) a DICOM SEG refers to, or None."""
  name: str
  files: dict[str, Path]
  slices: np.ndarray
  shape: tuple[int, int, int]
  affine: np.ndarray
  header: object
  voxel_ml: float
  slice_paths: list[str]
  flair_series: object = None


def _load(path: Path):
  import nibabel as nib

  if not path.is_file():
    raise DataError(f'{path}: no such file')
  try:
    image = nib.load(str(path))
  except Exception as e:  # noqa: BLE001 -- nibabel raises several kinds for non-NIfTI files
    raise DataError(f'{path}: not a readable NIfTI file ({type(e).__name__})') from None
  if len(image.shape) != 3:
    raise DataError(f'{path}: is {len(image.shape)}D {image.shape}; one 3D volume per modality is needed')
  return image


def _voxels(image, path: Path) -> np.ndarray:
  """The volume's voxels in the closest canonical frame (RAS). nibabel reads them only now, after
  the header: a file cut short or with damaged compression fails here, named."""
  import nibabel as nib

  try:
    return nib.as_closest_canonical(image).get_fdata(dtype=np.float32)
  except Exception as e:  # noqa: BLE001 -- gzip, zlib and nibabel each raise their own kind
    raise DataError(f'{path}: its voxels cannot be read: the file is cut short or damaged ({type(e).__name__})') from None


def scale_to_uint8(volume: np.ndarray, p99: float) -> np.ndarray:
  """One modality's volume in 8 bits as the LGG slices are: voxels <= 0 (and NaN) stay 0; the 99th
  percentile of the positive voxels maps to `p99`; clipped at 255. Unchanged by any positive
  rescaling of the input (scanner units do not matter)."""
  volume = np.nan_to_num(np.asarray(volume, np.float64), nan=0.0)
  positive = volume[volume > 0]
  if positive.size == 0:
    return np.zeros(volume.shape, np.uint8)
  scaled = np.where(volume > 0, volume * (p99 / np.percentile(positive, 99)), 0)
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_display(canonical: np.ndarray) -> np.ndarray:
  """[X, Y, Z, ...] in RAS -> [Z, Y, X, ...] axial slices shown as the LGG slices are (row 0
  anterior, column 0 the patient's right)."""
  return np.moveaxis(np.flip(canonical, (0, 1)).swapaxes(0, 1), 2, 0)


def from_display(slices: np.ndarray) -> np.ndarray:
  """The inverse of `to_display`."""
  return np.flip(np.moveaxis(slices, 0, 2).swapaxes(0, 1), (0, 1))


def _resize(plane: np.ndarray, shape: tuple[int, int], resample) -> np.ndarray:
  return np.asarray(Image.fromarray(plane).resize(shape[::-1], resample))


def read_case(files: dict[str, Path], name: str | None = None) -> Case:
  """The case's three NIfTI volumes as LGG-like slices (module docstring). Refuses volumes of
  different shapes or affines, 4D files, non-NIfTI files and files cut short, naming the file."""
  images = {m: _load(Path(files[m])) for m in MODALITIES}
  return case_from_images(images, files, name or case_name(Path(files['flair'])))


def case_from_images(images: dict, files: dict[str, Path], name: str, flair_series=None) -> Case:
  """A case from its three nibabel images (`files` names their sources in errors and outputs):
  refuses images of different shapes or affines (the three must be co-registered)."""
  reference = images['flair']
  for modality, image in images.items():
    if image.shape != reference.shape:
      raise DataError(f'{files[modality]}: shape {image.shape} differs from the FLAIR volume\'s {reference.shape}; '
                      'the three volumes must be co-registered')
    if not np.allclose(image.affine, reference.affine, atol=1e-3):
      raise DataError(f'{files[modality]}: its affine differs from the FLAIR volume\'s; the three volumes must be '
                      'co-registered (same grid)')
  channels = []
  for modality, p99 in zip(MODALITIES, LGG_P99):
    canonical = _voxels(images[modality], Path(files[modality]))
    channels.append(scale_to_uint8(to_display(canonical), p99))
  slices = np.stack(channels, -1)  # [Z, Y, X, 3]
  if slices.shape[1:3] != (SIZE, SIZE):
    slices = np.stack([np.stack([_resize(s[..., c], (SIZE, SIZE), Image.BILINEAR) for c in range(3)], -1)
                       for s in slices])
  zooms = reference.header.get_zooms()[:3]
  slice_paths = [str(files['flair'])] * len(slices)
  if flair_series is not None:
    slice_paths = _slice_files(reference.affine, flair_series.frames, str(files['flair']))
  return Case(name, {m: Path(files[m]) for m in MODALITIES}, slices, tuple(reference.shape), reference.affine,
              reference.header, float(np.prod(zooms)) / 1000.0, slice_paths, flair_series)


def _slice_files(affine: np.ndarray, frames: list, folder: str) -> list[str]:
  """The file behind each axial slice when the series' own slices are axial (its third voxel axis
  runs inferior-superior), in the slices' order; otherwise every slice cuts across the series'
  images and is named by the series' folder."""
  import nibabel as nib

  axis, direction = nib.orientations.io_orientation(affine)[2]
  if int(axis) != 2:
    return [folder] * len(frames)
  files = [str(frame.path) for frame in frames]
  return files if direction > 0 else files[::-1]


def to_input_frame(case: Case, planes: np.ndarray) -> np.ndarray:
  """Masks [Z, 256, 256] bool of the case's slices -> a uint8 volume, or maps [Z, 256, 256] float
  (probabilities) -> a float32 volume, with the input's shape, in the input's own voxel order (its
  affine applies unchanged). Both are resized bilinearly; masks are cut at half."""
  import nibabel as nib

  ornt = nib.orientations.io_orientation(case.affine)
  canonical_shape = [case.shape[int(axis)] for axis in np.argsort(ornt[:, 0])]  # input axis behind each RAS axis
  in_plane = (canonical_shape[1], canonical_shape[0])  # display rows are Y, columns X
  if np.asarray(planes).dtype == bool:
    resized = np.stack([_resize(np.asarray(m, np.uint8) * 255, in_plane, Image.BILINEAR) >= 128 for m in planes])
    canonical = from_display(resized).astype(np.uint8)
  else:
    canonical = from_display(np.stack([_resize(np.asarray(m, np.float32), in_plane, Image.BILINEAR) for m in planes]))
  return nib.orientations.apply_orientation(canonical, nib.orientations.ornt_transform(
      nib.orientations.axcodes2ornt('RAS'), ornt))


def write_volume(case: Case, planes: np.ndarray, path: Path) -> np.ndarray:
  """Writes `<path>` (.nii.gz) of `planes` (`to_input_frame`: a uint8 mask or a float32 map) with
  the input's shape and affine; returns the volume."""
  import nibabel as nib

  volume = to_input_frame(case, planes)
  header = case.header.copy()
  header.set_data_dtype(volume.dtype)
  nib.save(nib.Nifti1Image(volume, case.affine, header), str(path))
  return volume

