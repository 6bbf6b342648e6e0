"""Grad-CAM for the ResNet classifier: where in the slice the tumor evidence is.

The classifier is layer4 -> global average pool -> head, so the tumor logit is an exact
function of the layer4 activations A; Grad-CAM weights each channel of A by the mean gradient
of that logit and keeps the positive part: relu(sum_c mean_hw(dlogit/dA_c) * A_c).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbrain.models.resnet import ResNet


def gradcam(model: ResNet, variables: dict, images: jax.Array, target_class: int = 1) -> jax.Array:
  """Heatmaps [B, h, w] in [0, 1] at layer4 resolution (input / 32) for preprocessed images [B, H, W, 3]."""
  _, state = model.apply(variables, images, train=False, mutable=['intermediates'])
  activations = state['intermediates']['backbone']['layer4'][0]

  def target_logit(a):
    logits = model.apply(variables, jnp.mean(a, axis=(1, 2)), train=False, method='classify')
    return logits[:, target_class].sum()

  gradients = jax.grad(target_logit)(activations)
  weights = jnp.mean(gradients, axis=(1, 2), keepdims=True)
  cam = jax.nn.relu(jnp.sum(weights * activations, axis=-1))
  peak = jnp.max(cam, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1), 0.0)

