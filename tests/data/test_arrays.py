import numpy as np

from jaxbrain.data.arrays import with_neighbours


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
