"""Synthetic brain-MRI "phantom" patients written in the exact kaggle_3m layout.

Each patient is a stack of 256x256 3-channel slices (pre-contrast, FLAIR, post-contrast): a skull
ring, brain tissue with a smooth intensity bias field, ventricles, Rician-like noise, and a
hyperintense (on FLAIR) irregular tumor spanning about 35% of consecutive slices. The masks are the
tumor's pixels exactly. Deterministic for a seed. It is the embedded default dataset: what tests
use and what the experiments fall back to when no real data is given.
"""
from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from jaxbrain.data import clinical
from jaxbrain.data.kaggle3m import IMAGE_SIZE
from jaxbrain.errors import OutputExistsError

DATA_CSV_COLUMNS = (clinical.PATIENT, *clinical.COLUMNS)  # every clinical value empty: phantoms have none
INSTITUTIONS = ('PH', 'QX')  # codes that no real TCGA institution uses


def _bias_field(rng: np.random.Generator, strength: float) -> np.ndarray:
  """A smooth multiplicative intensity inhomogeneity around 1 (bicubic upsampled 4x4 noise)."""
  coarse = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
  field = Image.fromarray(coarse, mode='F').resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
  return 1.0 + strength * np.asarray(field)


def _ellipse(yy, xx, cy, cx, ry, rx):
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


class _Patient:
  """Random anatomy of one synthetic patient; `slice(k)` renders slice k of `n_slices`."""

  def __init__(self, rng: np.random.Generator, n_slices: int, tumor_fraction: float):
    self.rng = rng
    self.n = n_slices
    self.center = IMAGE_SIZE / 2 + rng.uniform(-8, 8, 2)
    self.radii = np.array([rng.uniform(88, 104), rng.uniform(72, 88)])  # head (y, x)
    self.skull = rng.uniform(5, 8)
    self.contrast = rng.uniform(0.85, 1.15, 3)  # per-sequence gain
    span = max(2, int(round(tumor_fraction * n_slices)))
    first = int(rng.integers(max(1, n_slices // 5), max(2, n_slices - span - n_slices // 6)))
    self.tumor_slices = range(first, first + span)
    angle = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.2, 0.55)
    self.tumor_center = self.center + dist * self.radii * 0.6 * np.array([np.sin(angle), np.cos(angle)])
    self.tumor_radius = rng.uniform(12, 30)
    self.bias = _bias_field(rng, 0.15)
    self.harmonics = [(k, rng.uniform(0, 0.25 / k ** 0.5), rng.uniform(0, 2 * np.pi)) for k in range(2, 7)]

  def slice(self, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = self.rng
    z = (k + 0.5) / self.n * 2 - 1  # -1 (bottom) .. 1 (top)
    scale = np.sqrt(max(1 - (0.9 * z) ** 2, 0.05))
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    cy, cx = self.center
    ry, rx = self.radii * scale
    head = _ellipse(yy, xx, cy, cx, ry, rx) <= 1
    brain = _ellipse(yy, xx, cy, cx, ry - self.skull, rx - self.skull) <= 1
    skull = head & ~brain
    ventricles = np.zeros_like(head)
    if abs(z) < 0.5:
      vr = (1 - 2 * abs(z)) * np.array([18, 7])
      for side in (-1, 1):
        ventricles |= _ellipse(yy, xx, cy - 4, cx + side * 10, vr[0] + 1e-3, vr[1] + 1e-3) <= 1
    # tissue intensities per sequence: pre-contrast (T1), FLAIR, post-contrast (T1+Gd)
    tissue = np.array([0.45, 0.42, 0.5]) * self.contrast
    bone = np.array([0.75, 0.35, 0.8])
    csf = np.array([0.15, 0.08, 0.18])
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    bias = self.bias
    for c in range(3):
      channel = np.where(brain, tissue[c], 0.0) + np.where(skull, bone[c], 0.0)
      channel = np.where(ventricles & brain, csf[c], channel)
      image[..., c] = channel * bias
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    if k in self.tumor_slices:
      mid = (self.tumor_slices.start + self.tumor_slices.stop - 1) / 2
      half = max(len(self.tumor_slices) / 2, 1)
      radius = max(self.tumor_radius * np.sqrt(max(1 - ((k - mid) / (half + 0.5)) ** 2, 0)), 4.0)
      ty, tx = self.tumor_center
      theta = np.arctan2(yy - ty, xx - tx)
      wobble = 1 + sum(a * np.cos(h * theta + p + 0.3 * k) for h, a, p in self.harmonics)
      mask = (np.hypot(yy - ty, xx - tx) <= radius * wobble) & brain & ~ventricles
      texture = 1 + 0.08 * rng.standard_normal(mask.sum())
      image[mask, 0] *= 0.8  # hypointense on T1
      image[mask, 1] = (0.78 * self.contrast[1] * texture) * bias[mask]  # hyperintense on FLAIR
      image[mask, 2] *= 1.1
    noise = rng.normal(0, 0.025, image.shape) + 1j * rng.normal(0, 0.025, image.shape)
    image = np.abs(image + noise) * head[..., None] + 0.01 * np.abs(noise.real)
    return np.clip(image * 255, 0, 255).astype(np.uint8), mask


def write_phantom(root: str | Path, n_patients: int = 10, slices_per_patient: tuple[int, int] = (20, 32),
                  tumor_fraction: float = 0.35, seed: int = 0, image_format: str = 'tif',
                  exist_ok: bool = False) -> Path:
  """Writes `n_patients` synthetic patients under `root` in the kaggle_3m layout and returns `root`.

  The tree is built in a temporary folder beside `root` and renamed into place when complete, so an
  interrupted run never leaves a partial dataset behind. `root` must not exist yet, unless
  `exist_ok`: then a `root` already there, or put there meanwhile by another process writing the
  same phantom (runs of a sweep starting together), is returned as it is.
  """
  root = Path(root)
  if image_format not in ('tif', 'png'):
    raise ValueError(f'image_format must be "tif" or "png", not {image_format!r}')
  if root.exists():
    if exist_ok:
      return root
    raise OutputExistsError(f'{root}: already exists; choose a new folder for the phantom dataset')
  root.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f'.{root.name}.partial-', dir=root.parent))
  try:
    rng = np.random.default_rng(seed)
    patients = []
    for i in range(n_patients):
      institution = INSTITUTIONS[i % len(INSTITUTIONS)]
      patient = f'TCGA_{institution}_{1000 + i:04d}'
      date = f'{1990 + int(rng.integers(0, 20))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}'
      case = f'{patient}_{date}'
      case_dir = staging / case
      case_dir.mkdir()
      n_slices = int(rng.integers(slices_per_patient[0], slices_per_patient[1] + 1))
      anatomy = _Patient(np.random.default_rng(rng.integers(2 ** 63)), n_slices, tumor_fraction)
      for k in range(n_slices):
        image, mask = anatomy.slice(k)
        Image.fromarray(image, 'RGB').save(case_dir / f'{case}_{k + 1}.{image_format}')
        Image.fromarray(mask.astype(np.uint8) * 255, 'L').save(case_dir / f'{case}_{k + 1}_mask.{image_format}')
      patients.append(patient)
    with open(staging / 'data.csv', 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(DATA_CSV_COLUMNS)
      for patient in patients:
        writer.writerow([patient] + [''] * (len(DATA_CSV_COLUMNS) - 1))
    (staging / 'README.md').write_text(
        f'# Synthetic LGG phantom (jaxbrain)\n\nNot patient data: {n_patients} synthetic patients made by '
        f'`jaxbrain.data.write_phantom(seed={seed})` in the kaggle_3m layout.\n')
    try:
      staging.rename(root)
    except OSError as e:  # a folder at `root` now: another process finished first
      if not root.exists():
        raise
      shutil.rmtree(staging, ignore_errors=True)
      if not exist_ok:
        raise OutputExistsError(f'{root}: written by another process meanwhile') from e
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return root


SCANNER_GAIN = (3.1, 7.4, 5.2)  # arbitrary units per 8-bit step for t1, flair, t1ce: not 8-bit data


def write_nifti_phantom(folder: str | Path, n_slices: int = 24, seed: int = 0, axcodes: str = 'LPS',
                        in_plane: int = 240, spacing: tuple[float, float, float] = (0.9, 0.9, 2.5),
                        names: str = '2021') -> tuple[dict[str, Path], np.ndarray]:
  """One synthetic patient as a BraTS-named NIfTI case in `folder`: ((modality -> file), the true
  tumor mask as a bool volume in the files' own voxel order).

  The phantom's slices are resampled in-plane to `in_plane` pixels, put in RAS voxel order, scaled
  to scanner-like float units (`SCANNER_GAIN`), then stored with axes ordered and flipped as
  `axcodes` says (the affine says the same), so a reader must reorient to get the slices back.
  """
  import nibabel as nib

  from jaxbrain.data import nifti

  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  anatomy = _Patient(np.random.default_rng(seed), n_slices, 0.35)
  rendered = [anatomy.slice(k) for k in range(n_slices)]
  shape = (in_plane, in_plane)
  images = np.stack([np.asarray(Image.fromarray(image).resize(shape, Image.BILINEAR)) for image, _ in rendered])
  masks = np.stack([np.asarray(Image.fromarray(mask).resize(shape, Image.NEAREST)) for _, mask in rendered])
  ras_affine = np.diag([*spacing, 1.0])
  to_target = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt('RAS'),
                                              nib.orientations.axcodes2ornt(tuple(axcodes)))
  canonical_shape = nifti.from_display(masks).shape
  affine = ras_affine @ nib.orientations.inv_ornt_aff(to_target, canonical_shape)
  stored = lambda volume: nib.orientations.apply_orientation(nifti.from_display(volume), to_target)  # noqa: E731
  case = f'phantom{seed:03d}'
  files = {}
  for c, (modality, gain) in enumerate(zip(nifti.MODALITIES, SCANNER_GAIN)):
    suffix = nifti.NAMES[modality][0 if names == '2021' else 1]
    files[modality] = folder / f'{case}{suffix}.nii.gz'
    nib.save(nib.Nifti1Image(stored(images[..., c]).astype(np.float32) * gain, affine), str(files[modality]))
  return files, stored(masks).astype(bool)
