import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbrain.metrics import pointing_game
from jaxbrain.models.gradcam import gradcam
from jaxbrain.models import create_model


def test_gradcam_shape_range_and_definition():
  model = create_model('resnet18', num_classes=2, head_hidden=(32, 16))
  images = jax.random.normal(jax.random.key(0), (3, 64, 64, 3))
  variables = model.init(jax.random.key(1), images)
  cams = gradcam(model, variables, images)
  assert cams.shape == (3, 2, 2)
  peaks = np.asarray(cams).reshape(3, -1).max(1)
  assert float(cams.min()) >= 0 and np.all(np.isclose(peaks, 1) | (peaks == 0))
  # by hand: weights = spatial mean of d logit / d A for the head on pooled A
  _, state = model.apply(variables, images, mutable=['intermediates'])
  a = state['intermediates']['backbone']['layer4'][0]
  logit = lambda x: model.apply(variables, x, method='classify')[:, 1].sum()
  g_pooled = jax.grad(logit)(a.mean((1, 2)))  # d logit / d pooled; dA = g_pooled / (h * w)
  cam = jax.nn.relu(jnp.einsum('bhwc,bc->bhw', a, g_pooled / 4))
  cam = cam / jnp.maximum(cam.max((1, 2), keepdims=True), 1e-12)
  np.testing.assert_allclose(cams, cam, atol=1e-5)


def test_pointing_game_by_hand():
  heat = np.zeros((3, 2, 2), np.float32)
  heat[0, 0, 0] = 1  # peak top-left
  heat[1, 1, 1] = 1  # peak bottom-right
  heat[2, 0, 1] = 1
  masks = np.zeros((3, 8, 8), bool)
  masks[0, :3, :3] = True  # contains the top-left peak -> hit
  masks[1, :3, :3] = True  # peak is bottom-right -> miss
  # slice 2 has no tumor: not counted
  assert pointing_game(heat, masks) == pytest.approx(0.5)
  assert np.isnan(pointing_game(heat, np.zeros_like(masks)))
