"""Layers whose exact semantics matter for matching PyTorch."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxbrain import kernels


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, numerically PyTorch's `BatchNorm2d`.

  Unlike `flax.linen.BatchNorm`, the running variance is updated with the unbiased batch
  variance (n / (n - 1)), as PyTorch does; normalization uses the biased one. `momentum` keeps
  Flax's convention (weight of the old average): 0.9 here is PyTorch's 0.1. Under `jax.jit`
  with a data-sharded batch the statistics are over the global batch (synchronized BatchNorm).
  `batch_normalize` computes training-mode normalization (a `kernels.Kernels` field: how, not what).
  Variables: params `scale`, `bias`; batch_stats `mean`, `var` (the names Flax uses).
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  batch_normalize: Callable = kernels.batch_normalize

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))
    if self.use_running_average:
      return kernels.normalize(x, scale, bias, running_mean.value, running_var.value, self.epsilon).astype(self.dtype)
    y, mean, var = self.batch_normalize(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      n = x.size // features
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var * (n / max(n - 1, 1))
    return y.astype(self.dtype)
