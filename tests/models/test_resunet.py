import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbrain.models import ResUNet, create_segmenter
from jaxbrain.train.steps import segmentation_loss


@pytest.mark.parametrize('encoder,size', [('residual', 64), ('resnet18', 64), ('residual', 256)])
def test_output_is_one_logit_map_at_input_resolution(encoder, size):
  model = create_segmenter(encoder, width=4)
  x = jnp.zeros((2, size, size, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert out.shape == (2, size, size)
  if encoder == 'resnet18':
    assert 'backbone' in variables['params'] and 'layer4_1' in variables['params']['backbone']


def test_unknown_encoder():
  with pytest.raises(ValueError, match='unknown encoder'):
    ResUNet(encoder='vgg').init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_loss_by_hand():
  masks = jnp.array([[[1.0, 0.0], [0.0, 0.0]]])
  logits = jnp.array([[[0.0, 0.0], [0.0, 0.0]]])  # p = 0.5 everywhere
  bce = np.log(2)
  soft_dice = (2 * 0.5 + 1) / (2.0 + 1 + 1)
  np.testing.assert_allclose(segmentation_loss(logits, masks), bce + 1 - soft_dice, rtol=1e-6)
  confident = jnp.where(masks > 0, 20.0, -20.0)
  assert float(segmentation_loss(confident, masks)) < 1e-3
  empty = jnp.zeros_like(masks)
  assert float(segmentation_loss(jnp.full_like(masks, -20.0), empty)) < 1e-3  # empty mask, empty prediction
