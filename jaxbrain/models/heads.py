"""Heads on backbone features: the classifier on pooled features, the mask head on the feature pyramid."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# The report's head is Linear-ReLU-Dropout-Linear-Dropout-Linear without stating sizes; these
# defaults shrink 512/2048 features in two steps to 2 classes and drop a quarter of the units.
REPORT_HEAD_HIDDEN = (256, 64)
"""The report's head: hidden widths of Linear-ReLU-Dropout-Linear-Dropout-Linear."""
REPORT_HEAD_DROPOUT = 0.25
"""The report's head: the dropout rate of both dropout layers."""


class ClassifierHead(nn.Module):
  """Dense layers on features [B, F] -> logits [B, num_classes].

  `hidden=()` is a single linear layer named `fc` (torchvision's classifier). Two hidden sizes
  give the report's Linear-ReLU-Dropout-Linear-Dropout-Linear (no ReLU after the second Linear).
  """
  num_classes: int
  hidden: Sequence[int] = ()
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not self.hidden:
      return nn.Dense(self.num_classes, name='fc')(x)
    if len(self.hidden) != 2:
      raise ValueError(f'the report head has two hidden layers, got hidden={tuple(self.hidden)}')
    x = nn.relu(nn.Dense(self.hidden[0], name='fc1')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.hidden[1], name='fc2')(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='fc3')(x)


class MaskHead(nn.Module):
  """Tumor logits per 8x8-pixel cell from a ResNet's pyramid: a 1x1 convolution on each of layer2,
  layer3 and layer4 (strides 8, 16, 32), the coarser two repeated up to layer2's grid and summed,
  as a feature pyramid's top-down path does without its 3x3 smoothing. Light on purpose: it is
  there to teach the backbone where tumors are, not to segment them (its most likely cell can also
  score the slice: `ResNet.probability`)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pyramid):
    *_, layer2, layer3, layer4 = pyramid
    logits = 0.0
    for name, features in (('layer2', layer2), ('layer3', layer3), ('layer4', layer4)):
      cell = nn.Conv(1, (1, 1), dtype=self.dtype, name=name)(features)
      repeat = layer2.shape[1] // cell.shape[1]
      logits = logits + jnp.repeat(jnp.repeat(cell, repeat, axis=1), repeat, axis=2)
    return logits[..., 0].astype(jnp.float32)
