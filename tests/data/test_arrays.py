import numpy as np
import pytest

from jaxbrain.data.arrays import scaled_per_volume, segmenter_inputs, with_neighbours


def test_neighbours_come_in_slice_order_and_never_cross_a_patient():
  """Catches neighbours taken in the wrong order (above before below), the slice itself off the
  middle, neighbours borrowed from the next or previous patient at a volume's ends, and ends that
  wrap around instead of repeating the end slice."""
  images = np.arange(5, dtype=np.uint8)[:, None, None, None] * 10 + np.arange(3, dtype=np.uint8)  # [5, 1, 1, 3]
  stacked = with_neighbours(images, ['A', 'A', 'A', 'B', 'B'], 1)
  assert stacked.shape == (5, 1, 1, 9)
  sources = stacked[:, 0, 0, ::3] // 10  # which slice each third of the channels came from
  np.testing.assert_array_equal(sources, [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4]])
  np.testing.assert_array_equal(stacked[:, 0, 0, 3:6], images[:, 0, 0])  # each slice's own channels, in order
  two = with_neighbours(images, ['A'] * 5, 2)[:, 0, 0, ::3] // 10
  np.testing.assert_array_equal(two[0], [0, 0, 0, 1, 2])
  np.testing.assert_array_equal(two[4], [2, 3, 4, 4, 4])
  assert with_neighbours(images, np.arange(5), 0) is images


def test_each_volume_and_channel_lands_on_one_intensity_scale():
  """Catches a scale shared across patients (the dim scan would stay dim), one factor for all
  channels (a dim channel beside a bright one would stay dim), the background counted in the
  percentile or shifted off 0, and an all-zero channel divided by zero."""
  rng = np.random.default_rng(0)
  head = rng.uniform(20, 100, (4, 8, 8, 3))
  head[..., :2, :] = 0  # background rows
  dim = head * np.array([0.3, 1.0, 0.5])
  dim[..., 2] = 0  # a channel with nothing in it
  images = np.clip(np.concatenate([head, dim]), 0, 255).astype(np.uint8)
  scaled = scaled_per_volume(images, ['bright'] * 4 + ['dim'] * 4)
  for volume in (scaled[:4], scaled[4:]):
    for c in (0, 1):
      assert np.percentile(volume[..., c][volume[..., c] > 0], 99) == pytest.approx(200, abs=2)
  assert (scaled[..., :2, :] == 0).all() and (scaled[4:, ..., 2] == 0).all()
  np.testing.assert_array_equal(segmenter_inputs(images, ['bright'] * 4 + ['dim'] * 4, 1, scale_volumes=True),
                                with_neighbours(scaled, ['bright'] * 4 + ['dim'] * 4, 1))
