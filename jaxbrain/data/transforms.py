"""The report's preprocessing variants as jittable JAX functions, run on the accelerator.

Order: random horizontal flip (image and mask together) -> resize -> scale to [0, 1] ->
ImageNet normalization. Randomness is per example and comes from an explicit rng key.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ('resize', 'resize_normalize', 'resize_flip', 'resize_flip_normalize')


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """One preprocessing variant: output `size`, and whether to flip (train only) and normalize."""
  size: int = 224
  flip: bool = True
  normalize: bool = True

  @property
  def name(self) -> str:
    return 'resize' + '_flip' * self.flip + '_normalize' * self.normalize

  @classmethod
  def from_name(cls, name: str, size: int = 224) -> 'Preprocess':
    if name not in VARIANTS:
      raise ValueError(f'unknown preprocessing {name!r}; choose one of {VARIANTS}')
    return cls(size=size, flip='flip' in name, normalize='normalize' in name)


def resize(images: jax.Array, size: int, method: str = 'bilinear') -> jax.Array:
  """[B, H, W, C] -> [B, size, size, C]; antialiased like torchvision's Resize on PIL images."""
  batch, height, width, channels = images.shape
  if (height, width) == (size, size):
    return images
  return jax.image.resize(images, (batch, size, size, channels), method=method, antialias=True)


def normalize(images: jax.Array) -> jax.Array:
  """ImageNet normalization of [0, 1] pixels."""
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def random_hflip(key: jax.Array, images: jax.Array, masks: jax.Array | None = None):
  """Flips each example left-right with probability 1/2; a mask is flipped with its image."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
  if masks is not None:
    masks = jnp.where(flip.reshape((-1,) + (1,) * (masks.ndim - 1)), masks[:, :, ::-1], masks)
  return images, masks


def preprocess(config: Preprocess, key: jax.Array | None, images: jax.Array,
               masks: jax.Array | None = None, train: bool = False):
  """uint8 images [B, H, W, 3] (and masks [B, H, W]) -> float32 [B, S, S, 3] (and [B, S, S]).

  Flips only when `train` and `config.flip`; masks are resized by nearest neighbour.
  """
  if train and config.flip:
    images, masks = random_hflip(key, images, masks)
  images = resize(images.astype(jnp.float32) / 255.0, config.size)
  if config.normalize:
    images = normalize(images)
  if masks is not None:
    masks = resize(masks[..., None].astype(jnp.float32), config.size, 'nearest')[..., 0]
  return images, masks
