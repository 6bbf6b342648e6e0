import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbrain.data import Preprocessing, apply_preprocessing
from jaxbrain.data.transforms import (AUGMENTED, IMAGENET_MEAN, IMAGENET_STD, VARIANTS, normalize, random_affine,
                                      random_hflip, random_intensity, resize)


def test_normalization_values():
  pixels = jnp.array([[[[0.485, 0.456, 0.406], [1.0, 0.0, 0.5]]]])
  out = np.asarray(normalize(pixels))
  np.testing.assert_allclose(out[0, 0, 0], [0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], [(1 - .485) / .229, (0 - .456) / .224, (.5 - .406) / .225], rtol=1e-6)


def test_flip_moves_image_and_mask_together():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (64, 8, 8, 3)).astype(np.uint8)
  masks = (images[..., 1] > 128).astype(np.uint8)  # mask is a function of the image pixels
  out_images, out_masks = random_hflip(jax.random.key(0), jnp.asarray(images), jnp.asarray(masks))
  out_images, out_masks = np.asarray(out_images), np.asarray(out_masks)
  flipped = np.array([np.array_equal(o, i[:, ::-1]) and not np.array_equal(o, i) for o, i in zip(out_images, images)])
  kept = np.array([np.array_equal(o, i) for o, i in zip(out_images, images)])
  assert np.all(flipped | kept) and 16 < flipped.sum() < 48  # random per example
  np.testing.assert_array_equal(out_masks, (out_images[..., 1] > 128).astype(np.uint8))


def test_flip_is_reproducible_from_the_key():
  images = jnp.arange(16 * 4 * 4 * 3, dtype=jnp.float32).reshape(16, 4, 4, 3)
  a, _ = random_hflip(jax.random.key(5), images)
  b, _ = random_hflip(jax.random.key(5), images)
  c, _ = random_hflip(jax.random.key(6), images)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_resize_to_224_preserves_constant_images_and_masks():
  images = jnp.full((2, 256, 256, 3), 0.25)
  masks = jnp.zeros((2, 256, 256)).at[:, 100:156, 100:156].set(1)
  assert resize(images, 224).shape == (2, 224, 224, 3)
  np.testing.assert_allclose(resize(images, 224), 0.25, atol=1e-6)
  resized = resize(masks[..., None], 224, 'nearest')[..., 0]
  assert set(np.unique(resized)) == {0.0, 1.0}
  assert abs(float(resized[0].sum()) - 56 * 56 * (224 / 256) ** 2) < 150


@pytest.mark.parametrize('name', VARIANTS)
def test_variants(name):
  config = Preprocessing.from_name(name, size=32)
  assert config.name == name
  images = np.full((4, 64, 64, 3), 255, np.uint8)
  images[:, :, :32] = 0  # left half black: a flip is visible
  masks = (images[..., 0] > 0).astype(np.uint8)
  out, out_masks = jax.jit(lambda k, x, m: apply_preprocessing(config, k, x, m, train=True))(jax.random.key(1), images, masks)
  assert out.shape == (4, 32, 32, 3) and out.dtype == jnp.float32 and out_masks.shape == (4, 32, 32)
  white = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD) if config.normalize else np.ones(3)
  right_white = np.allclose(out[:, 16:, 28:], white, atol=1e-5)
  np.testing.assert_array_equal(out_masks[:, :, 28:] == 1, np.broadcast_to(
      np.isclose(out[:, :, 28:, 0], white[0], atol=1e-5), out_masks[:, :, 28:].shape))
  if not config.flip:
    assert right_white
  evaluated, _ = apply_preprocessing(config, None, images, train=False)
  assert np.allclose(evaluated[:, :, 28:], white, atol=1e-5)  # no flip outside training


def test_unknown_variant():
  with pytest.raises(ValueError, match='unknown preprocessing'):
    Preprocessing.from_name('resize_rotate')


def _square_masks(batch=16, size=32):
  masks = np.zeros((batch, size, size), np.float32)
  masks[:, 8:20, 12:26] = 1  # off-centre rectangle: rotation and scaling move it visibly
  return masks


def test_affine_without_scale_or_rotation_is_the_identity():
  masks = _square_masks()
  images = np.stack([masks, 1 - masks, masks * 0.5], -1)
  out, out_masks = random_affine(jax.random.key(0), jnp.asarray(images), jnp.asarray(masks), 0.0, 0.0)
  np.testing.assert_allclose(out, images, atol=1e-5)
  np.testing.assert_array_equal(out_masks, masks)


def test_affine_moves_image_and_mask_together_and_differs_per_example():
  masks = _square_masks()
  images = np.repeat(masks[..., None], 3, -1)  # the image is the mask: they must stay aligned
  out, out_masks = random_affine(jax.random.key(3), jnp.asarray(images), jnp.asarray(masks), 0.1, 30.0)
  out, out_masks = np.asarray(out), np.asarray(out_masks)
  assert set(np.unique(out_masks)) <= {0.0, 1.0}
  np.testing.assert_array_equal(out_masks, (out[..., 0] > 0.5).astype(np.float32))
  assert len({m.tobytes() for m in out_masks}) == len(masks)  # a different warp per example
  area = out_masks.sum((1, 2)) / masks[0].sum()
  assert np.all((area > 0.9 ** 2 - 0.1) & (area < 1.1 ** 2 + 0.1))  # rotation keeps area, scale changes it
  again, _ = random_affine(jax.random.key(3), jnp.asarray(images), jnp.asarray(masks), 0.1, 30.0)
  np.testing.assert_array_equal(again, out)


def _centroid_offset(masks):  # distance of each mask's centroid from the image centre
  ys, xs = np.meshgrid(np.arange(masks.shape[1]), np.arange(masks.shape[2]), indexing='ij')
  centre = (masks.shape[1] - 1) / 2
  area = masks.sum((1, 2))
  return np.hypot((masks * ys).sum((1, 2)) / area - centre, (masks * xs).sum((1, 2)) / area - centre)


def test_rotation_turns_about_the_centre_and_scaling_moves_away_from_it():
  masks = _square_masks(16, 64) * 0
  masks[:, 10:30, 20:50] = 1
  images = jnp.asarray(np.repeat(masks[..., None], 3, -1))
  _, rotated = random_affine(jax.random.key(0), images, jnp.asarray(masks), 0.0, 40.0)
  np.testing.assert_allclose(_centroid_offset(np.asarray(rotated)), _centroid_offset(masks), atol=0.6)
  np.testing.assert_allclose(np.asarray(rotated).sum((1, 2)), masks.sum((1, 2)), rtol=0.06)
  _, scaled = random_affine(jax.random.key(0), images, jnp.asarray(masks), 0.2, 0.0)
  factor = np.sqrt(np.asarray(scaled).sum((1, 2)) / masks.sum((1, 2)))  # linear scale of each example
  assert factor.min() < 0.95 and factor.max() > 1.05
  np.testing.assert_allclose(_centroid_offset(np.asarray(scaled)) / _centroid_offset(masks), factor, rtol=0.04)


@pytest.mark.parametrize('name', AUGMENTED)
def test_augmented_variants_only_augment_in_training(name):
  """Catches an augmentation applied at evaluation, and a variant name that loses an augmentation."""
  config = Preprocessing.from_name(name, size=32)
  assert config.name == name and config.flip and (config.affine or config.intensity)
  images = np.repeat(_square_masks(4, 64)[..., None] * 255, 3, -1).astype(np.uint8)
  masks = (images[..., 0] > 0).astype(np.uint8)
  trained, trained_masks = jax.jit(lambda k, x, m: apply_preprocessing(config, k, x, m, train=True))(
      jax.random.key(1), images, masks)
  evaluated, evaluated_masks = apply_preprocessing(config, None, images, masks, train=False)
  plain, plain_masks = apply_preprocessing(Preprocessing(32, flip=False, normalize=config.normalize), None, images, masks)
  np.testing.assert_array_equal(evaluated, plain)
  np.testing.assert_array_equal(evaluated_masks, plain_masks)
  assert not np.array_equal(trained_masks, plain_masks)


def test_intensity_keeps_the_background_and_the_mask_and_differs_per_example():
  """Catches an intensity change that lifts the background (0 must stay 0), leaves the image as it
  was, draws one change for the whole batch, or touches the mask."""
  images = jnp.asarray(np.tile(np.linspace(0, 1, 16, dtype=np.float32)[None, :, None, None], (8, 1, 16, 3)))
  out = np.asarray(random_intensity(jax.random.key(0), images))
  assert (out[:, 0] == 0).all() and out.min() >= 0 and out.max() <= 1
  assert not np.allclose(out, images)
  assert len({round(float(v), 5) for v in out[:, 8, 0, 0]}) == 8
  config = Preprocessing.from_name('resize_flip_intensity_normalize', size=16)
  masks = np.zeros((8, 16, 16), np.uint8)
  masks[:, 4:8, 2:5] = 1
  uint8 = (np.asarray(images) * 255).astype(np.uint8)
  _, trained_masks = apply_preprocessing(config, jax.random.key(1), uint8, masks, train=True)
  _, flipped_only = apply_preprocessing(Preprocessing(16, flip=True), jax.random.key(1), uint8, masks, train=True)
  np.testing.assert_array_equal(trained_masks, flipped_only)


def test_normalization_of_stacked_slices_treats_each_slice_like_one():
  """Catches 2.5D input normalized with the mean and spread of other channels (the neighbours'
  channels would be shifted differently from the slice's own)."""
  one = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
  stacked = jnp.concatenate([one, one * 0.5, one], axis=-1)
  np.testing.assert_allclose(normalize(stacked), jnp.concatenate([normalize(one), normalize(one * 0.5),
                                                                  normalize(one)], axis=-1), rtol=1e-6)
