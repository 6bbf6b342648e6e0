"""Scan, validate and decode a Kaggle `kaggle_3m` LGG tree (original `.tif` or lossless `.png`).

Layout: `ROOT/TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<k>.<ext>` (256x256 RGB: pre-contrast,
FLAIR, post-contrast) and `..._<k>_mask.<ext>` (256x256, one channel, 0 = background, nonzero = tumor).
Every problem raises `DataError` naming the file and what is wrong; stray non-image files only warn.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxbrain.errors import Caution, UserError
from jaxbrain.text import counted

IMAGE_SIZE = 256
IMAGE_EXTENSIONS = ('.tif', '.tiff', '.png')
PATIENT_DIR = re.compile(r'^TCGA_([A-Z0-9]{2})_([A-Z0-9]{4})_(\d{8})$')
SLICE_FILE = re.compile(r'^(?P<case>TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}_\d{8})_(?P<slice>\d+)(?P<mask>_mask)?$')
CHANNELS = ('pre-contrast', 'FLAIR', 'post-contrast')


class DataError(UserError, ValueError):
  """Unusable input data; the message names the offending file or folder and the problem."""


@dataclasses.dataclass(frozen=True)
class SliceRecord:
  """One MR slice on disk and where it belongs."""
  patient: str  # e.g. 'TCGA_CS_4941' (the `Patient` column of data.csv)
  institution: str  # e.g. 'CS'
  slice: int  # 1-based slice number from the file name
  image_path: Path
  mask_path: Path


def _not_kaggle3m(root: Path, entries: Sequence[Path]) -> DataError:
  hint = ''
  if (root / 'kaggle_3m').is_dir():
    hint = f' Did you mean {root / "kaggle_3m"}?'
  seen = ', '.join(sorted(p.name for p in entries)[:5])
  return DataError(
      f'{root}: not a kaggle_3m folder: no patient folders named TCGA_<inst>_<id>_<date> '
      f'(found: {seen}).{hint}')


def scan(root: str | Path) -> list[SliceRecord]:
  """Lists every (image, mask) pair under a kaggle_3m root, sorted by patient and slice.

  Checks the layout only (names, pairing); pixels are checked when decoded by `read_slice`.
  """
  root = Path(root)
  if not root.exists():
    raise DataError(f'{root}: no such folder')
  if not root.is_dir():
    raise DataError(f'{root}: not a folder (expected the kaggle_3m folder of the LGG dataset)')
  entries = [p for p in root.iterdir() if not p.name.startswith('.')]
  if not entries:
    raise DataError(f'{root}: folder is empty (expected kaggle_3m patient folders TCGA_<inst>_<id>_<date>/)')
  patient_dirs = sorted(p for p in entries if p.is_dir() and PATIENT_DIR.match(p.name))
  if not patient_dirs:
    raise _not_kaggle3m(root, entries)
  for near_miss in sorted(p for p in entries if p.is_dir() and p.name.upper().startswith('TCGA')
                          and not PATIENT_DIR.match(p.name)):
    warnings.warn(f'{near_miss}: looks like a patient folder but its name does not match TCGA_<inst>_<id>_<date> '
                  '(e.g. TCGA_CS_4941_19960909); skipped', Caution, stacklevel=2)
  records = []
  for case_dir in patient_dirs:
    records.extend(_scan_case(case_dir))
  return records


def _scan_case(case_dir: Path) -> list[SliceRecord]:
  institution = PATIENT_DIR.match(case_dir.name).group(1)
  patient = case_dir.name.rsplit('_', 1)[0]
  images: dict[int, Path] = {}
  masks: dict[int, Path] = {}
  for path in sorted(case_dir.iterdir()):
    if path.name.startswith('.'):
      continue
    match = SLICE_FILE.match(path.stem)
    if path.suffix.lower() not in IMAGE_EXTENSIONS or not match or match['case'] != case_dir.name or not path.is_file():
      warnings.warn(f'{path}: not a slice image of {case_dir.name}; skipped', Caution, stacklevel=3)
      continue
    target = masks if match['mask'] else images
    number = int(match['slice'])
    if number in target:
      raise DataError(f'{path}: duplicate of {target[number]} (same slice in two formats?)')
    target[number] = path
  for number in sorted(images.keys() - masks.keys()):
    raise DataError(f'{images[number]}: image has no mask (expected {case_dir.name}_{number}_mask.tif or .png)')
  for number in sorted(masks.keys() - images.keys()):
    raise DataError(f'{masks[number]}: mask has no image (expected {case_dir.name}_{number}.tif or .png)')
  if not images:
    raise DataError(f'{case_dir}: patient folder has no slices')
  return [SliceRecord(patient, institution, n, images[n], masks[n]) for n in sorted(images)]


def fingerprint(root: str | Path) -> str:
  """A hash of the tree's content: every file's relative path and bytes. It keys the built dataset
  (a changed, added or removed file rebuilds it) and is recorded in every run, so a run says which
  data it saw. Modification times are left out: a copy of the same files (a fresh download, a copy
  without preserved times) is the same data and resumes the same runs."""
  root = Path(root)
  digest = hashlib.sha256()
  for path in sorted(p for p in root.rglob('*') if p.is_file()):
    with open(path, 'rb') as f:
      content = hashlib.file_digest(f, 'sha256').hexdigest()
    digest.update(f'{path.relative_to(root).as_posix()}\0{content}\n'.encode())
  return digest.hexdigest()[:16]


def _open(path: Path, data: bytes | None = None) -> Image.Image:
  """Decodes `path` (or `data`, the file's bytes, named by `path` in errors) and checks its size."""
  try:
    image = Image.open(io.BytesIO(data) if data is not None else path)
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):  # before decoding: a huge image is refused unread
      raise DataError(f'{path}: wrong size {image.size[0]}x{image.size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}')
    image.load()
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except IsADirectoryError:
    raise DataError(f'{path}: is a folder, not an image file') from None
  except Image.DecompressionBombError as e:
    raise DataError(f'{path}: refused as a decompression bomb ({e}); slices are {IMAGE_SIZE}x{IMAGE_SIZE}') from None
  except UnidentifiedImageError:
    raise DataError(f'{path}: not an image file (cannot be decoded)') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: corrupt or truncated image ({e})') from None
  if image.size != (IMAGE_SIZE, IMAGE_SIZE):
    raise DataError(f'{path}: wrong size {image.size[0]}x{image.size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}')
  return image


def _image_array(image: Image.Image, path) -> np.ndarray:
  if image.mode != 'RGB':
    raise DataError(f'{path}: wrong mode {image.mode!r}, expected a 3-channel RGB image')
  return np.asarray(image, dtype=np.uint8)


def _mask_values(image: Image.Image, path) -> np.ndarray:
  if image.mode not in ('L', '1', 'P', 'I', 'I;16'):
    raise DataError(f'{path}: wrong mode {image.mode!r}, expected a single-channel mask')
  return np.asarray(image)


def read_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
  """Decodes one slice image: uint8 [256, 256, 3] (pre-contrast, FLAIR, post-contrast).

  `data`: the file's bytes when they come from elsewhere (e.g. Spark); `path` then names them.
  """
  return _image_array(_open(Path(path), data), path)


def read_mask(path: str | Path) -> np.ndarray:
  """Decodes one tumor mask: uint8 [256, 256] with 1 = tumor (any nonzero source pixel)."""
  return (_mask_values(_open(Path(path)), path) > 0).astype(np.uint8)


def read_slice(record: SliceRecord) -> tuple[np.ndarray, np.ndarray]:
  """Decodes and validates one (image, mask) pair."""
  return read_image(record.image_path), read_mask(record.mask_path)


SOFT_MASK, LOSSY_PNG = 'mask values other than 0 and 255', '.png file holding JPEG (lossy) data'


@dataclasses.dataclass(frozen=True)
class DecodedSlice:
  """One validated slice (`read_slice`'s arrays), what was bent on the way (`notes`: SOFT_MASK for
  mask values other than 0 and 255, e.g. noise or anti-aliased edges, all counted as tumor;
  LOSSY_PNG for a .png that holds JPEG bytes), and the image file's bytes when they are a lossless
  PNG (`image_png`, storable as they are), else None."""
  image: np.ndarray
  mask: np.ndarray
  notes: tuple[str, ...]
  image_png: bytes | None


def read_slice_noting(record: SliceRecord) -> DecodedSlice:
  """`read_slice` plus its notes; each file is read and decoded once."""
  image_bytes, mask_bytes = _read_bytes(record.image_path), _read_bytes(record.mask_path)
  image_file, mask_file = _open(record.image_path, image_bytes), _open(record.mask_path, mask_bytes)
  image, raw_mask = _image_array(image_file, record.image_path), _mask_values(mask_file, record.mask_path)
  notes = []
  if mask_file.mode != '1' and np.any((raw_mask != 0) & (raw_mask != 255)):
    notes.append(SOFT_MASK)
  if any(path.suffix.lower() == '.png' and opened.format != 'PNG'
         for path, opened in ((record.image_path, image_file), (record.mask_path, mask_file))):
    notes.append(LOSSY_PNG)
  lossless_png = record.image_path.suffix.lower() == '.png' and image_file.format == 'PNG'
  return DecodedSlice(image, (raw_mask > 0).astype(np.uint8), tuple(notes), image_bytes if lossless_png else None)


def _read_bytes(path: Path) -> bytes:
  try:
    return path.read_bytes()
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except IsADirectoryError:
    raise DataError(f'{path}: is a folder, not an image file') from None


def warn_notes(notes: Sequence[tuple[str, ...]], where: str | Path) -> dict[str, int]:
  """One warning per kind of note, with the count of slices it concerns; returns the counts."""
  counts = Counter(note for slice_notes in notes for note in slice_notes)
  for note, count in sorted(counts.items()):
    warnings.warn(f'{where}: {counted(count, "slice")} with {note}' + (' (every non-zero pixel is counted as tumor)'
                                                            if note == SOFT_MASK else ''), Caution, stacklevel=2)
  return dict(counts)


def decode_workers() -> int:
  """Threads that decode slices: one per core this process may use (at least 2)."""
  return max(2, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 2)


def map_slices(fn: Callable[[SliceRecord], object], records: Sequence[SliceRecord],
               progress: str | None = None, workers: int | None = None) -> list:
  """Applies `fn` to every record on a thread pool (PIL decodes outside the GIL), in order; one
  thread per core unless `workers` says otherwise."""
  with ThreadPoolExecutor(workers or decode_workers()) as pool:
    results = pool.map(fn, records)
    if progress:
      from tqdm import tqdm
      results = tqdm(results, total=len(records), desc=progress, unit='slice')
    return list(results)


def channels_present(image: np.ndarray) -> tuple[str, ...]:
  """Which sequences are real: the dataset replaces a missing one with a copy of FLAIR."""
  flair = image[..., 1]
  present = [CHANNELS[1]]
  if not np.array_equal(image[..., 0], flair):
    present.insert(0, CHANNELS[0])
  if not np.array_equal(image[..., 2], flair):
    present.append(CHANNELS[2])
  return tuple(present)


def summarize(root: str | Path, progress: bool = False) -> dict:
  """Validates every slice under `root` and counts patients, slices and tumor slices.

  Returns a JSON-ready dict: `patients`, `slices`, `tumor_slices`, `institutions` (per code:
  patients, slices, tumor_slices) and `channels` (patients per set of real sequences).
  """
  records = scan(root)

  def inspect(record: SliceRecord):
    decoded = read_slice_noting(record)
    return bool(decoded.mask.any()), channels_present(decoded.image), decoded.notes

  results = map_slices(inspect, records, progress='validating' if progress else None)
  notes = warn_notes([n for _, _, n in results], root)
  results = [(tumor, present) for tumor, present, _ in results]
  per_inst: dict[str, dict] = defaultdict(lambda: {'patients': 0, 'slices': 0, 'tumor_slices': 0})
  patient_channels: dict[str, set] = defaultdict(set)
  for record, (tumor, present) in zip(records, results):
    per_inst[record.institution]['slices'] += 1
    per_inst[record.institution]['tumor_slices'] += tumor
    # A blank slice (all zero) makes every channel equal; it says nothing about the sequences.
    patient_channels[record.patient].add(present)
  patients = sorted({r.patient for r in records})
  for patient in patients:
    per_inst[patient.split('_')[1]]['patients'] += 1
  channels = Counter(' + '.join(max(sets, key=len)) for sets in patient_channels.values())
  return {
      'root': str(Path(root)),
      'patients': len(patients),
      'slices': len(records),
      'tumor_slices': int(sum(t for t, _ in results)),
      'institutions': dict(sorted(per_inst.items())),
      'channels': dict(sorted(channels.items())),
      'formats': sorted({r.image_path.suffix.lower() for r in records}),
      'warnings': notes,
  }


def slice_identity(path: Path) -> tuple[str, int | None]:
  """(patient, slice) from a kaggle_3m file name; else (its folder's name, None)."""
  match = SLICE_FILE.match(path.stem)
  if match:
    return match['case'].rsplit('_', 1)[0], int(match['slice'])
  return path.parent.name, None
