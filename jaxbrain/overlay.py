"""Overlay images that show where a tumor is: predicted mask in red, true outline in green."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

BAND = 20  # pixels of the caption band `captioned` adds below an overlay


def outline(mask: np.ndarray) -> np.ndarray:
  """The boundary pixels of a binary mask [H, W] (the mask minus its 4-neighbour erosion)."""
  mask = np.asarray(mask, bool)
  padded = np.pad(mask, 1)
  eroded = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
  return mask & ~eroded


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  if mask.shape == shape:
    return np.asarray(mask, bool)
  return np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(shape[::-1], Image.NEAREST)) > 0


def mask_overlay(image: np.ndarray, predicted: np.ndarray | None = None, true: np.ndarray | None = None,
                 alpha: float = 0.45) -> np.ndarray:
  """uint8 RGB [H, W, 3] of the FLAIR channel in gray, the predicted mask tinted red, the true
  mask's outline in green. Masks of another resolution are resized (nearest) to the image."""
  gray = np.repeat(np.asarray(image)[..., 1:2], 3, axis=-1).astype(np.float32)
  out = gray
  if predicted is not None:
    predicted = _fit(predicted, gray.shape[:2])
    out = np.where(predicted[..., None], (1 - alpha) * gray + alpha * np.array([255, 0, 0]), gray)
  if true is not None:
    out[outline(_fit(true, gray.shape[:2]))] = (0, 255, 0)
  return np.clip(out, 0, 255).astype(np.uint8)


def heat_colors(heat: np.ndarray) -> np.ndarray:
  """The heatmap's colours for values in [0, 1]: red (0) to yellow (1), as float RGB [..., 3]."""
  heat = np.clip(np.asarray(heat, np.float32), 0, 1)[..., None]
  return np.concatenate([np.ones_like(heat), heat, np.zeros_like(heat)], -1) * 255


def captioned(overlay: np.ndarray, text: str, scale: str | None) -> np.ndarray:
  """The overlay with a band below it holding `text` (the slice's probability and label) and the
  colour key: `scale='heatmap'` a red-to-yellow bar from 0 to 1, `'mask'` a red swatch, None none."""
  height, width = overlay.shape[:2]
  band = Image.new('RGB', (width, BAND), (0, 0, 0))
  draw = ImageDraw.Draw(band)
  draw.text((4, 4), text, fill=(255, 255, 255))
  key_left = width - 96
  if scale == 'heatmap':
    ramp = heat_colors(np.linspace(0, 1, 64))
    for x, color in enumerate(ramp.astype(np.uint8)):
      draw.line([(key_left + 10 + x, 5), (key_left + 10 + x, BAND - 5)], fill=tuple(int(c) for c in color))
    draw.text((key_left, 4), '0', fill=(255, 255, 255))
    draw.text((key_left + 78, 4), '1', fill=(255, 255, 255))
  elif scale == 'mask':
    draw.rectangle([key_left + 30, 5, key_left + 40, BAND - 5], fill=(255, 0, 0))
    draw.text((key_left + 46, 4), 'mask', fill=(255, 255, 255))
  return np.concatenate([np.asarray(overlay, np.uint8), np.asarray(band)], axis=0)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, true: np.ndarray | None = None,
                    alpha: float = 0.5) -> np.ndarray:
  """uint8 RGB of the FLAIR channel with a [0, 1] heatmap (any resolution) blended in as red-yellow."""
  gray = np.repeat(np.asarray(image)[..., 1:2], 3, axis=-1).astype(np.float32)
  heat = np.asarray(Image.fromarray(np.asarray(heatmap, np.float32)).resize(gray.shape[1::-1], Image.BILINEAR))
  color = heat_colors(heat)
  heat = np.clip(heat, 0, 1)[..., None]
  out = (1 - alpha * heat) * gray + alpha * heat * color
  if true is not None:
    out[outline(_fit(true, gray.shape[:2]))] = (0, 255, 0)
  return np.clip(out, 0, 255).astype(np.uint8)
