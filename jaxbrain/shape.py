"""Shape features of a tumour mask volume, after Mazurowski et al. 2017 (J Neurooncol 133:27-35,
"Radiogenomics of lower-grade glioma: algorithmically-assessed tumor shape is associated with tumor
genomic subtypes and patient outcomes") and Buda, Saha, Mazurowski 2019 (Computers in Biology and
Medicine 109:218-225, arXiv 1906.03720), who tested three of them against the genomic subtypes of
this dataset's patients: angular standard deviation and margin fluctuation (2D, on the slice with the
largest tumour area) and the bounding ellipsoid volume ratio (3D).

The papers describe the features in words; their exact parameters (the number of angular bins, the
width of the smoothing window, whether a feature is divided by the tumour's mean radius) are not
given in the text this project could read, so the choices made here are stated with each feature and
fixed in `RADIAL_SAMPLES`, `ANGULAR_BINS` and `SMOOTHING_SAMPLES`. Both 2D features are divided by
the mean radius, so that they describe the margin's shape and not the tumour's size (size is
`voxels`).

A mask volume is [Z, H, W]: axial slices, inferior to superior, in-plane pixels taken as square.
The Kaggle slices carry no spacing: the 2D features are scale-free and the bounding ellipsoid volume
ratio is invariant to any scaling of the axes (an affine map multiplies the tumour's volume and that
of its minimum enclosing ellipsoid by the same determinant), so none of them needs it; what they do
assume is a regular grid, slices equally spaced without gaps. The volume in mL needs the voxel's
volume and is None without it. A mask without tumour has `voxels` 0 and every shape feature None
(JSON null): a shape of nothing is not defined, and 0 would read as a perfectly regular tumour.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

RADIAL_SAMPLES = 360  # rays cast from the centroid, one a degree
ANGULAR_BINS = 10  # angular standard deviation: sectors of 36 degrees
SMOOTHING_SAMPLES = RADIAL_SAMPLES // ANGULAR_BINS  # margin fluctuation: a 36-degree moving average
RAY_STEP = 0.1  # pixels between the points tried along a ray
ELLIPSOID_TOLERANCE = 1e-6  # Khachiyan's iterations: how far from optimal the weights may stop


@dataclasses.dataclass(frozen=True)
class ShapeFeatures:
  """One tumour's shape. `voxels`: tumour voxels; `volume_ml`: their volume where the voxel's is
  known, else None; `tumour_slices`: slices holding tumour; `largest_slice`: index of the slice with
  the largest tumour area (the first of equals) and `largest_slice_area` its pixels; `pieces`: 3D
  connected components (26-connectivity); `angular_standard_deviation`, `margin_fluctuation`,
  `bounding_ellipsoid_volume_ratio`: see their functions. Every field but `voxels`,
  `tumour_slices` and `pieces` is None for a mask without tumour."""
  voxels: int
  volume_ml: float | None
  tumour_slices: int
  largest_slice: int | None
  largest_slice_area: int | None
  pieces: int
  angular_standard_deviation: float | None
  margin_fluctuation: float | None
  bounding_ellipsoid_volume_ratio: float | None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


FEATURES = ('angular_standard_deviation', 'margin_fluctuation', 'bounding_ellipsoid_volume_ratio')


def radial_profile(region: np.ndarray, samples: int = RADIAL_SAMPLES) -> np.ndarray:
  """The margin's distance from the centroid of the 2D `region` [H, W], in pixels, at `samples`
  equally spaced angles: along each ray, the farthest point whose pixel is in the region (for a
  region that is not star-shaped about its centroid, its outermost margin on that ray). Casting rays
  samples the margin uniformly in angle, as the features' definitions over angle need; walking the
  boundary pixels instead would weight each direction by its arc length. A point belongs to the pixel
  it rounds to, so the margin is the pixels' outer edge: a one-pixel region has radius 0.5 to 0.7.
  A ray that meets no tumour (the centroid of a crescent lies outside it) has radius 0."""
  rows, cols = np.nonzero(region)
  centre = np.array([rows.mean(), cols.mean()])
  angles = 2 * np.pi * np.arange(samples) / samples
  reach = np.hypot(*region.shape)
  steps = np.arange(0.0, reach, RAY_STEP)
  points = centre[None, None, :] + steps[None, :, None] * np.stack([-np.sin(angles), np.cos(angles)], -1)[:, None, :]
  pixel = np.rint(points).astype(int)
  inside = np.all((pixel >= 0) & (pixel < np.array(region.shape)), axis=-1)
  pixel = np.where(inside[..., None], pixel, 0)
  hit = inside & region[pixel[..., 0], pixel[..., 1]].astype(bool)
  last = steps.size - 1 - np.argmax(hit[:, ::-1], axis=1)
  return np.where(hit.any(axis=1), steps[last], 0.0)


def angular_standard_deviation(profile: np.ndarray, bins: int = ANGULAR_BINS) -> float:
  """The radial profile cut into `bins` equal sectors; the standard deviation of the radius within
  each sector, averaged over the sectors and divided by the mean radius (Mazurowski et al. 2017
  describe the average of the sectors' standard deviations; the division is this project's, to
  leave size out). A circle gives 0; the margin r = R(1 + a cos(k theta)) with k a multiple of
  `bins` gives a / sqrt(2)."""
  sectors = profile.reshape(bins, -1)
  return float(sectors.std(axis=1).mean() / profile.mean())


def margin_fluctuation(profile: np.ndarray, window: int = SMOOTHING_SAMPLES) -> float:
  """The radial profile minus its circular moving average over `window` samples; the standard
  deviation of that difference divided by the mean radius (Mazurowski et al. 2017: how much the
  margin departs from a smoothed version of itself; the window and the division are this
  project's). A circle, and any margin that changes slowly over the window, give about 0; the margin
  r = R(1 + a cos(k theta)) with the window a whole number of its periods gives a / sqrt(2)."""
  kernel = np.ones(window) / window
  wrapped = np.concatenate([profile[-window:], profile, profile[:window]])
  smooth = np.convolve(wrapped, kernel, mode='same')[window:-window]
  return float((profile - smooth).std() / profile.mean())


def minimum_enclosing_ellipsoid(points: np.ndarray, tolerance: float = ELLIPSOID_TOLERANCE
                                ) -> tuple[np.ndarray, np.ndarray]:
  """The minimum-volume ellipsoid holding every point of `points` [N, d]: (centre [d], A [d, d]),
  the ellipsoid {x: (x - centre)^T A (x - centre) <= 1}, whose volume is the unit ball's over
  sqrt(det A). Khachiyan's algorithm with Wolfe's away steps, as Todd and Yildirim (2007) state it:
  weights on the points, each step moving weight towards the point farthest outside the current
  ellipsoid or away from the supporting point deepest inside it, until every point's lifted
  distance is within `tolerance` of d + 1 (outside) and every supporting point's too (inside).
  Without the away steps the weights converge linearly and take minutes on a tumour's hull."""
  n, d = points.shape
  lifted = np.concatenate([points, np.ones((n, 1))], axis=1).T  # [d + 1, n]
  weights = np.full(n, 1.0 / n)
  while True:
    reach = np.einsum('in,ij,jn->n', lifted, np.linalg.inv((lifted * weights) @ lifted.T), lifted)
    outside = int(np.argmax(reach))
    inside = int(np.argmin(np.where(weights > 0, reach, np.inf)))
    if reach[outside] <= (d + 1) * (1 + tolerance) and reach[inside] >= (d + 1) * (1 - tolerance):
      break
    k = outside if reach[outside] - (d + 1) >= (d + 1) - reach[inside] else inside
    step = (reach[k] - d - 1) / ((d + 1) * (reach[k] - 1))
    if k == inside:  # an away step takes at most the point's whole weight
      step = max(step, -weights[k] / (1 - weights[k]))
    weights = (1 - step) * weights
    weights[k] = max(weights[k] + step, 0.0)
  centre = points.T @ weights
  spread = (points.T * weights) @ points - np.outer(centre, centre)
  return centre, np.linalg.inv(spread) / d


def bounding_ellipsoid_volume_ratio(volume: np.ndarray) -> float | None:
  """The tumour's volume (its voxel count) over that of the minimum-volume ellipsoid enclosing its
  voxels' centres (Mazurowski et al. 2017; Buda et al. 2019): about 1 for an ellipsoidal tumour
  (a voxelized ellipsoid can pass 1 slightly, its outer voxels reaching beyond their centres),
  smaller the more irregular it is; a cube of s voxels a side gives 2 / (sqrt(3) pi) (s / (s - 1))^3.
  Invariant to the axes' scaling, so the unknown spacing of the Kaggle slices does not change it. A
  tumour whose centres lie in one plane or line (a single slice, say) encloses no volume: None."""
  centres = np.argwhere(volume).astype(float)
  try:
    centres = centres[ConvexHull(centres).vertices]  # a set's enclosing ellipsoid is its hull's
  except QhullError:  # flat: every centre in one plane
    return None
  _, shape = minimum_enclosing_ellipsoid(centres)
  ellipsoid = 4 / 3 * np.pi / np.sqrt(np.linalg.det(shape))
  return float(volume.sum() / ellipsoid)


def shape_features(volume: np.ndarray, voxel_ml: float | None = None) -> ShapeFeatures:
  """The shape features of the mask `volume` [Z, H, W] (nonzero is tumour); `voxel_ml`: one voxel's
  volume in mL where known. A mask without tumour: see the module docstring."""
  volume = np.asarray(volume).astype(bool)
  if volume.ndim != 3:
    raise ValueError(f'a mask volume is [Z, H, W]; got shape {volume.shape}')
  voxels = int(volume.sum())
  areas = volume.sum(axis=(1, 2))
  pieces = int(ndimage.label(volume, structure=np.ones((3, 3, 3)))[1])
  if not voxels:
    return ShapeFeatures(0, 0.0 if voxel_ml is not None else None, 0, None, None, 0, None, None, None)
  largest = int(np.argmax(areas))
  profile = radial_profile(volume[largest])
  return ShapeFeatures(
      voxels=voxels, volume_ml=voxels * voxel_ml if voxel_ml is not None else None,
      tumour_slices=int((areas > 0).sum()), largest_slice=largest, largest_slice_area=int(areas[largest]),
      pieces=pieces, angular_standard_deviation=angular_standard_deviation(profile),
      margin_fluctuation=margin_fluctuation(profile),
      bounding_ellipsoid_volume_ratio=bounding_ellipsoid_volume_ratio(volume))
