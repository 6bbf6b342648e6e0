"""The report's preprocessing variants as jittable JAX functions, run on the accelerator.

Order: random horizontal flip (image and mask together) -> resize -> scale to [0, 1] ->
[random scale + rotation] -> [random gamma + gain] -> ImageNet normalization. Randomness
is per example and comes from an explicit rng key. The report's four variants are VARIANTS; the
`_affine` variants add the scale/rotation augmentation Buda et al. (2019) used for LGG
segmentation, the `_intensity` ones a per-slice gamma and gain (MRI intensities have no absolute
scale: they differ between scanners and patients).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ('resize', 'resize_normalize', 'resize_flip', 'resize_flip_normalize')
AUGMENTED = ('resize_flip_affine', 'resize_flip_affine_normalize', 'resize_flip_intensity_normalize',
             'resize_flip_affine_intensity_normalize')


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """One preprocessing variant: output `size`, whether to flip, scale/rotate and change the intensity
  (train only), normalize."""
  size: int = 224
  flip: bool = True
  normalize: bool = True
  affine: bool = False
  intensity: bool = False

  @property
  def name(self) -> str:
    return ('resize' + '_flip' * self.flip + '_affine' * self.affine + '_intensity' * self.intensity
            + '_normalize' * self.normalize)

  @classmethod
  def from_name(cls, name: str, size: int = 224) -> 'Preprocessing':
    if name not in VARIANTS + AUGMENTED:
      raise ValueError(f'unknown preprocessing {name!r}; choose one of {VARIANTS + AUGMENTED}')
    return cls(size=size, flip='flip' in name, normalize='normalize' in name, affine='affine' in name,
               intensity='intensity' in name)


def resize(images: jax.Array, size: int, method: str = 'bilinear') -> jax.Array:
  """[B, H, W, C] -> [B, size, size, C]; antialiased like torchvision's Resize on PIL images."""
  batch, height, width, channels = images.shape
  if (height, width) == (size, size):
    return images
  return jax.image.resize(images, (batch, size, size, channels), method=method, antialias=True)


def normalize(images: jax.Array) -> jax.Array:
  """ImageNet normalization of [0, 1] pixels: [..., 3], or [..., 3k] for k slices stacked as
  channels (2.5D input), each slice's three channels normalized alike."""
  repeats = images.shape[-1] // 3
  return (images - jnp.tile(jnp.asarray(IMAGENET_MEAN), repeats)) / jnp.tile(jnp.asarray(IMAGENET_STD), repeats)


def random_hflip(key: jax.Array, images: jax.Array, masks: jax.Array | None = None):
  """Flips each example left-right with probability 1/2; a mask is flipped with its image."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
  if masks is not None:
    masks = jnp.where(flip.reshape((-1,) + (1,) * (masks.ndim - 1)), masks[:, :, ::-1], masks)
  return images, masks


def random_affine(key: jax.Array, images: jax.Array, masks: jax.Array | None = None, max_scale: float = 0.05,
                  max_degrees: float = 15.0):
  """Scales each example by 1 ± `max_scale` and rotates it by ± `max_degrees` about its centre.

  images [B, S, S, C] float -> same shape, bilinear, zero (background) outside; a mask is
  warped with its image and binarized again at 0.5.
  """
  batch, size = images.shape[0], images.shape[1]
  scale_key, angle_key = jax.random.split(key)
  scales = jax.random.uniform(scale_key, (batch,), minval=1 - max_scale, maxval=1 + max_scale)
  angles = jnp.deg2rad(jax.random.uniform(angle_key, (batch,), minval=-max_degrees, maxval=max_degrees))
  centre = (size - 1) / 2
  grid = jnp.stack(jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing='ij')).reshape(2, -1) - centre

  def source_coordinates(scale, angle):  # output pixel -> where it comes from in the input
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    inverse = jnp.array([[cos, sin], [-sin, cos]]) / scale
    return (inverse @ grid + centre).reshape(2, size, size)

  def warp(image, coordinates):  # [S, S, C]
    sample = lambda channel: jax.scipy.ndimage.map_coordinates(channel, list(coordinates), order=1, cval=0.0)
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)

  coordinates = jax.vmap(source_coordinates)(scales, angles)
  images = jax.vmap(warp)(images, coordinates)
  if masks is not None:
    masks = (jax.vmap(warp)(masks[..., None], coordinates)[..., 0] > 0.5).astype(masks.dtype)
  return images, masks


def random_intensity(key: jax.Array, images: jax.Array, max_gain: float = 0.2, max_log_gamma: float = 0.25):
  """Each example's [0, 1] pixels raised to a gamma in exp(± `max_log_gamma`), then times a gain of
  1 ± `max_gain`, clipped to [0, 1]. Both keep the background at 0, as scanners differ in contrast
  and scale, not in where the head is."""
  gamma_key, gain_key = jax.random.split(key)
  shape = (images.shape[0], 1, 1, 1)
  gamma = jnp.exp(jax.random.uniform(gamma_key, shape, minval=-max_log_gamma, maxval=max_log_gamma))
  gain = jax.random.uniform(gain_key, shape, minval=1 - max_gain, maxval=1 + max_gain)
  return jnp.clip(images ** gamma * gain, 0.0, 1.0)


def apply_preprocessing(preprocessing: Preprocessing, key: jax.Array | None, images: jax.Array,
               masks: jax.Array | None = None, train: bool = False):
  """uint8 images [B, H, W, C] (and masks [B, H, W]) -> float32 [B, S, S, C] (and [B, S, S]); C is 3,
  or a multiple of 3 for 2.5D input.

  Flips, scales/rotates and changes intensities only when `train` (and the variant asks); masks are
  resized by nearest neighbour.
  """
  if train and preprocessing.flip:
    images, masks = random_hflip(key, images, masks)
  images = resize(images.astype(jnp.float32) / 255.0, preprocessing.size)
  if masks is not None:
    masks = resize(masks[..., None].astype(jnp.float32), preprocessing.size, 'nearest')[..., 0]
  if train and preprocessing.affine:
    images, masks = random_affine(jax.random.fold_in(key, 1), images, masks)  # flips keep drawing from `key`
  if train and preprocessing.intensity:
    images = random_intensity(jax.random.fold_in(key, 2), images)
  if preprocessing.normalize:
    images = normalize(images)
  return images, masks


def native_logits(logits: jax.Array, size: int = 256) -> jax.Array:
  """Mask logits [B, S, S] at the model's resolution -> [B, size, size] at the slices' native size
  (bilinear): tumor pixels are counted there (`> 0`), by the runner and by `predict` alike."""
  if logits.shape[1:] == (size, size):
    return logits
  return jax.image.resize(logits, (logits.shape[0], size, size), 'bilinear')
