"""Shape features on shapes whose answers are known (`jaxbrain.shape`)."""
import numpy as np
import pytest

from jaxbrain import shape

GRID = np.mgrid[:256, :256].astype(float)


def _polar(cy=128.0, cx=128.0):
  dy, dx = GRID[0] - cy, GRID[1] - cx
  return np.hypot(dy, dx), np.arctan2(-dy, dx)


def _star(radius, amplitude, lobes):
  r, theta = _polar()
  return r <= radius * (1 + amplitude * np.cos(lobes * theta))


def _ellipsoid(semi_axes, size=(48, 72, 72)):
  z, y, x = np.mgrid[:size[0], :size[1], :size[2]].astype(float)
  centre = [(s - 1) / 2 for s in size]
  return sum(((c - m) / a) ** 2 for c, m, a in zip((z, y, x), centre, semi_axes)) <= 1


def test_a_disc_has_its_radius_and_a_regular_margin():
  """A disc: the profile is its radius (within the pixel edge) and both margin features are near 0.
  Catches a profile read from the centroid's wrong axis order or a feature that keeps the size."""
  profile = shape.radial_profile(_polar()[0] <= 40)
  assert profile.shape == (shape.RADIAL_SAMPLES,)
  assert np.all(np.abs(profile - 40) < 0.75)
  assert shape.angular_standard_deviation(profile) < 0.01
  assert shape.margin_fluctuation(profile) < 0.01


def test_a_crescent_whose_centroid_lies_outside_it_gets_radius_zero_where_no_ray_meets_it():
  """A half ring: the rays into its open side meet nothing and get 0, none gets more than the
  ring's outer radius. Catches a ray without tumour reported at the end of the image."""
  r, theta = _polar()
  crescent = (r >= 40) & (r <= 50) & (np.sin(theta) > 0.2)
  profile = shape.radial_profile(crescent)
  assert profile.max() < 60 and (profile == 0).sum() > shape.RADIAL_SAMPLES // 4


@pytest.mark.parametrize('amplitude', [0.1, 0.2])
def test_a_star_margin_gives_its_amplitude_over_root_two(amplitude):
  """r = R(1 + a cos(20 theta)): 20 lobes put two whole periods in each 36-degree sector and in the
  36-degree smoothing window, so both features equal a / sqrt(2) (within 3% for the pixels). Catches
  a sector or window of another width, a profile sampled unevenly in angle, a missing division by
  the mean radius."""
  profile = shape.radial_profile(_star(70, amplitude, 20))
  for feature in (shape.angular_standard_deviation, shape.margin_fluctuation):
    assert feature(profile) == pytest.approx(amplitude / np.sqrt(2), rel=0.03)


def test_an_ellipse_separates_the_two_margin_features():
  """An ellipse (semi-axes 80 and 40): both features are those of its exact profile r(theta) =
  ab / sqrt((b cos)^2 + (a sin)^2), and its margin changes slowly, so margin fluctuation is well
  under the angular standard deviation. Catches the two features computed the same way."""
  r, theta = _polar()
  a, b = 80.0, 40.0
  ellipse = (r * np.cos(theta) / a) ** 2 + (r * np.sin(theta) / b) ** 2 <= 1
  angles = 2 * np.pi * np.arange(shape.RADIAL_SAMPLES) / shape.RADIAL_SAMPLES
  exact = a * b / np.hypot(b * np.cos(angles), a * np.sin(angles))
  profile = shape.radial_profile(ellipse)
  assert shape.angular_standard_deviation(profile) == pytest.approx(shape.angular_standard_deviation(exact), rel=0.05)
  assert shape.margin_fluctuation(profile) == pytest.approx(shape.margin_fluctuation(exact), abs=0.005)
  assert shape.margin_fluctuation(profile) < shape.angular_standard_deviation(profile) / 2


@pytest.mark.parametrize('semi_axes', [(20, 20, 20), (12, 30, 22)])
def test_a_sphere_or_ellipsoid_fills_its_bounding_ellipsoid(semi_axes):
  """A voxelized sphere and ellipsoid: volume ratio 1 within 1.5%. Catches an ellipsoid fitted to
  the points' spread instead of enclosing them (ratio far from 1), a volume formula off by a
  constant, the iterations stopped early."""
  assert shape.bounding_ellipsoid_volume_ratio(_ellipsoid(semi_axes)) == pytest.approx(1.0, abs=0.015)


def test_a_cube_gives_its_known_ratio():
  """A cube of 10 voxels a side: its centres span 9, the enclosing sphere has radius 9 sqrt(3) / 2,
  so the ratio is 1000 / (4/3 pi (9 sqrt(3) / 2)^3) = 2 / (sqrt(3) pi) (10 / 9)^3. Catches an
  ellipsoid that does not enclose every point (a smaller volume) or is not minimal."""
  cube = np.zeros((16, 16, 16), bool)
  cube[3:13, 3:13, 3:13] = True
  expected = 2 / (np.sqrt(3) * np.pi) * (10 / 9) ** 3
  assert shape.bounding_ellipsoid_volume_ratio(cube) == pytest.approx(expected, rel=1e-4)


def test_the_enclosing_ellipsoid_holds_every_point_and_touches_the_hull():
  """Random points: every one inside the ellipsoid, the farthest on its surface. Catches a missing
  away step's early stop and a wrong scaling of A (1/d)."""
  points = np.random.default_rng(0).normal(size=(200, 3)) * [1, 3, 2]
  centre, a = shape.minimum_enclosing_ellipsoid(points)
  reach = np.einsum('ni,ij,nj->n', points - centre, a, points - centre)
  assert reach.max() == pytest.approx(1.0, abs=1e-4)


def test_the_volume_ratio_does_not_depend_on_the_slice_spacing():
  """The same ellipsoid cut into twice as many slices (a slice spacing halved): the ratio stays
  within 1%. Catches a feature that needs a spacing the Kaggle slices do not carry."""
  coarse = shape.bounding_ellipsoid_volume_ratio(_ellipsoid((10, 25, 18), size=(24, 64, 64)))
  fine = shape.bounding_ellipsoid_volume_ratio(_ellipsoid((20, 25, 18), size=(48, 64, 64)))
  assert fine == pytest.approx(coarse, rel=0.01)


def test_counts_volume_and_pieces():
  """Two separate blobs on slices 2-4: voxels, mL from the voxel's volume, slices, largest slice, two
  pieces. Catches pieces counted per slice and a largest slice picked by index."""
  volume = np.zeros((8, 32, 32), bool)
  volume[2:5, 4:10, 4:10] = True
  volume[3, 20:30, 20:30] = True
  found = shape.shape_features(volume, voxel_ml=0.002)
  assert (found.voxels, found.tumour_slices, found.largest_slice, found.largest_slice_area, found.pieces) == (
      208, 3, 3, 136, 2)
  assert found.volume_ml == pytest.approx(0.416)


def test_an_empty_mask_gives_its_stated_values_not_nan():
  """No tumour: 0 voxels, no slices, no pieces; the shape features None, never NaN (a NaN would pass
  silently into a mean or a test). A flat tumour (one slice) has no bounding ellipsoid: None.
  Catches a division by a zero radius or a hull fitted to a plane."""
  empty = shape.shape_features(np.zeros((4, 16, 16)), voxel_ml=0.001)
  assert empty.as_dict() == {'voxels': 0, 'volume_ml': 0.0, 'tumour_slices': 0, 'largest_slice': None,
                             'largest_slice_area': None, 'pieces': 0, 'angular_standard_deviation': None,
                             'margin_fluctuation': None, 'bounding_ellipsoid_volume_ratio': None}
  flat = np.zeros((4, 32, 32), bool)
  flat[1, 8:20, 8:24] = True
  found = shape.shape_features(flat)
  assert found.bounding_ellipsoid_volume_ratio is None and found.volume_ml is None
  assert found.angular_standard_deviation is not None


def test_a_mask_that_is_not_a_volume_is_refused():
  """A 2D mask is refused in one line. Catches a slice taken as a stack of rows."""
  with pytest.raises(ValueError, match=r'\[Z, H, W\]'):
    shape.shape_features(np.zeros((16, 16)))
