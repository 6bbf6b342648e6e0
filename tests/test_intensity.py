"""Intensity features of a tumour (`jaxbrain.intensity`): relative to the head, per sequence."""
import numpy as np
import pytest

from jaxbrain.intensity import FEATURE_NAMES, intensity_features


def _patient(pre=60, flair=100, post=80, tumour=(90, 200, 120)):
  """Two slices, a 20x20 head of constant intensity per channel and a 4x4 tumour in the first."""
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[:, 4:24, 4:24] = (pre, flair, post)
  images[0, 8:12, 8:12] = tumour
  mask = np.zeros((2, 32, 32), np.uint8)
  mask[0, 8:12, 8:12] = 255
  return images, mask


def test_each_sequence_is_relative_to_the_heads_median():
  """The tumour's intensity over the median of the head's nonzero pixels; enhancement is the
  post-contrast minus pre-contrast relative intensity. Catches absolute intensities (which a
  scanner's scaling would change), a median over the background, and the channels swapped."""
  found = intensity_features(*_patient())
  assert found['pre_contrast_median'] == pytest.approx(90 / 60)
  assert found['flair_median'] == pytest.approx(200 / 100)
  assert found['post_contrast_median'] == pytest.approx(120 / 80)
  assert found['enhancement'] == pytest.approx(120 / 80 - 90 / 60)
  assert found['flair_spread'] == 0


def test_a_scan_scaled_as_a_whole_gives_the_same_features():
  """Catches a feature that depends on the scanner's or the reader's intensity scale."""
  images, mask = _patient()
  scaled = images.astype(float) * 1.25
  assert intensity_features(scaled, mask) == pytest.approx(intensity_features(images, mask))


def test_the_spread_is_the_interquartile_range():
  """Tumour values 100..250 in FLAIR against a head of 100: IQR of the ratios. Catches the standard
  deviation or the full range used instead."""
  images, mask = _patient()
  images[0, 8:12, 8:12, 1] = np.arange(100, 260, 10).reshape(4, 4)
  ratios = np.arange(100, 260, 10) / 100
  found = intensity_features(images, mask)
  assert found['flair_spread'] == pytest.approx(np.percentile(ratios, 75) - np.percentile(ratios, 25))


def test_a_sequence_filled_with_flair_has_no_features():
  """kaggle_3m fills a missing sequence with a copy of FLAIR. Catches FLAIR's values read as the
  missing sequence's (and an enhancement computed from them)."""
  images, mask = _patient()
  images[..., 2] = images[..., 1]
  found = intensity_features(images, mask)
  assert found['post_contrast_median'] is None and found['post_contrast_spread'] is None
  assert found['enhancement'] is None and found['pre_contrast_median'] is not None


def test_no_tumour_gives_no_features():
  """Catches a 0 (or NaN) for an intensity of nothing."""
  images, mask = _patient()
  found = intensity_features(images, np.zeros_like(mask))
  assert list(found) == list(FEATURE_NAMES) and all(v is None for v in found.values())
