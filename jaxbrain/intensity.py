"""Intensity features of a tumour: how bright and how uneven it is in each MR sequence, relative to
the rest of the patient's head, and how much it enhances after contrast. The image model of the
tumour-type recipes (`jaxbrain.tumour_type`) that needs no training beyond a logistic regression.

The recipe, stated before any figure of it was seen and not tuned. For one patient's slices
[Z, H, W, 3] (channels pre-contrast, FLAIR, post-contrast, as in kaggle_3m) and its mask [Z, H, W]:
- each channel's reference is the median of its nonzero pixels over the whole volume (the head: the
  background of these scans is 0), so that a scanner's or a reader's scaling cancels;
- a tumour voxel's relative intensity in a channel is its value over that reference;
- per channel, `<channel>_median` and `<channel>_spread` (the interquartile range) of the tumour
  voxels' relative intensities; `enhancement`, the median over tumour voxels of post-contrast's
  relative intensity minus pre-contrast's.
A channel the dataset filled with a copy of FLAIR (equal to FLAIR in every slice: a sequence the
patient lacks, as `kaggle3m.channels_present` tells) gives None for its features, and for
`enhancement`; a mask without tumour gives None for all (JSON null: an intensity of nothing is not
defined).
"""
from __future__ import annotations

import numpy as np

from jaxbrain.data.kaggle3m import CHANNELS, channels_present

SEQUENCES = ('pre_contrast', 'flair', 'post_contrast')  # kaggle3m.CHANNELS, as feature names
FEATURE_NAMES = (*(f'{s}_{kind}' for s in SEQUENCES for kind in ('median', 'spread')), 'enhancement')


def intensity_features(images: np.ndarray, mask: np.ndarray) -> dict[str, float | None]:
  """`FEATURE_NAMES` of one patient from its slices `images` [Z, H, W, 3] and `mask` [Z, H, W]
  (nonzero is tumour), None where the module docstring says."""
  images, tumour = np.asarray(images, np.float64), np.asarray(mask).astype(bool)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[:3] != tumour.shape:
    raise ValueError(f'images [Z, H, W, 3] and a mask [Z, H, W] are needed; got {images.shape} and {tumour.shape}')
  found: dict[str, float | None] = dict.fromkeys(FEATURE_NAMES)
  if not tumour.any():
    return found
  present = channels_present(images)
  relative = {}
  for c, sequence in enumerate(SEQUENCES):
    channel = images[..., c]
    head = channel[channel > 0]
    if CHANNELS[c] not in present or not head.size:
      continue
    relative[sequence] = channel[tumour] / np.median(head)
    low, middle, high = np.percentile(relative[sequence], (25, 50, 75))
    found[f'{sequence}_median'], found[f'{sequence}_spread'] = float(middle), float(high - low)
  if 'pre_contrast' in relative and 'post_contrast' in relative:
    found['enhancement'] = float(np.median(relative['post_contrast'] - relative['pre_contrast']))
  return found
