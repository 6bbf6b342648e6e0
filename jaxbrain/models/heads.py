"""Classification heads on pooled backbone features."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

# The report's head is Linear-ReLU-Dropout-Linear-Dropout-Linear without stating sizes; these
# defaults shrink 512/2048 features in two steps to 2 classes and drop a quarter of the units.
REPORT_HEAD_HIDDEN = (256, 64)
REPORT_HEAD_DROPOUT = 0.25


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
